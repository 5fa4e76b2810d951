"""The supervisor process: start the replicas, publish server.json, watch, clean up.

It starts ``parallel_servers`` replicas (``PR_SET_PDEATHSIG``: a killed supervisor takes
them along), polls ``/health``, writes ``server.json`` atomically, and then stops the
replicas and exits when its owner is gone, when no live client has been registered for
``idle_timeout_s``, on SIGTERM/SIGINT, or when a replica dies.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import psutil

from episcribe.atomic import write_json
from episcribe.vlm.server.launchers import RECORDS, STOP_GRACE_S
from episcribe.vlm.server.owner import Freshness, OwnerBeat, Watch, alive, start_ticks
from episcribe.vlm.server.probe import answers, read_json, tail
from episcribe.vlm.sizing import DEFAULT_MAX_IMAGES, auto_max_model_len

log = logging.getLogger(__name__)

WATCH_S = 0.25
PORT_ATTEMPTS = 3
PR_SET_PDEATHSIG = 1


class StartFailed(Exception):
    pass


@dataclass
class Replica:
    index: int
    port: int
    cmd: list[str]
    log: Path
    proc: subprocess.Popen
    host: str = "127.0.0.1"  # the name other hosts reach it by

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def local_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def serve_command(
    settings: dict, index: int, port: int, run_dir: Path, bind: str = "127.0.0.1"
) -> list[str]:
    """The command line of replica ``index`` listening on ``bind``:``port``."""
    command = settings.get("serve_command") or "auto"
    if command != "auto":
        return [arg.replace("{port}", str(port)) for arg in shlex.split(command)]
    if settings["backend"] == "fake":
        fake = settings.get("fake") or {}
        return [
            sys.executable, "-m", "episcribe.vlm.fake_server", "--host", bind,
            "--port", str(port), "--model", settings["model_id"],
            "--latency-ms", str(fake.get("latency_ms", 0)),
            "--max-concurrency", str(fake.get("max_concurrency", 0)),
            "--fault-rate", str(fake.get("fault_rate", 0.0)),
            "--request-log", str(run_dir / f"fake_requests_{index}.jsonl"),
            *model_args(settings),
            *oracle_args(fake),
        ]  # fmt: skip
    cmd = ["vllm", "serve", settings["model_id"], "--host", bind, "--port", str(port)]
    cmd += model_args(settings)
    if settings.get("num_gpus", 0) > 1:
        cmd += ["--tensor-parallel-size", str(settings["num_gpus"])]
    return cmd + list(settings.get("extra_serve_args") or [])


def oracle_args(fake: dict) -> list[str]:
    """The fake server's oracle flags (vlm.fake.oracle*): none without a truth file."""
    if not fake.get("oracle"):
        return []
    return [
        "--oracle", str(Path(fake["oracle"]).resolve()),
        "--oracle-jitter-s", str(fake.get("oracle_jitter_s", 0.0)),
        "--oracle-merge-rate", str(fake.get("oracle_merge_rate", 0.0)),
        "--oracle-swap-rate", str(fake.get("oracle_swap_rate", 0.0)),
        "--oracle-seed", str(fake.get("oracle_seed", 0)),
    ]  # fmt: skip


def model_args(settings: dict) -> list[str]:
    """The vLLM flags that fit the server to the config's requests (the fake takes them too).

    - ``--max-model-len``: vlm.max_model_len, or the largest request the config can
      produce (a model's full context may not fit its KV cache on one GPU);
    - ``--limit-mm-per-prompt``: the most images one request carries, and one video
      when the plan sends clips (plan.use_video_url), else none;
    - ``--structured-outputs-config``: xgrammar (named: vLLM refuses the next option with
      ``auto``) with ``disable_any_whitespace``, so constrained JSON cannot run on with
      whitespace until the token budget is spent;
    - ``--enable-prompt-tokens-details``: usage reports the prefix-cached prompt tokens;
    - ``--reasoning-parser qwen3`` when thinking is on for a Qwen3-class model, so the
      thinking goes to ``reasoning_content`` and the JSON constraint applies after it.
    """
    images = int(settings.get("max_images") or DEFAULT_MAX_IMAGES)
    videos = int(settings.get("max_videos") or 0)
    length = settings.get("max_model_len") or auto_max_model_len(settings)
    args = [
        "--max-model-len", str(length),
        "--limit-mm-per-prompt", json.dumps({"image": images, "video": videos}),
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
        "--enable-prompt-tokens-details",
    ]  # fmt: skip
    if settings.get("enable_thinking") and "qwen3" in settings["model_id"].lower():
        args += ["--reasoning-parser", "qwen3"]
    return args


def _gpus(settings: dict, index: int) -> str:
    per = max(settings.get("num_gpus", 0), 1)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(per * (index + 1))]
    return ",".join(devices[index * per : (index + 1) * per])


def _free_port(exclude: set[int], bind: str = "127.0.0.1") -> int:
    while True:
        with socket.socket() as s:
            s.bind((bind, 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port


def _port_taken(port: int, bind: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((bind, port))
        except OSError:
            return True
    return False


_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: get SIGTERM when the supervisor dies, even by SIGKILL."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the supervisor died between fork and prctl
        os._exit(1)


def _spawn(
    settings: dict, run_dir: Path, index: int, exclude: set[int], bind: str = "127.0.0.1"
) -> Replica:
    port = _free_port(exclude, bind)
    exclude.add(port)
    cmd = serve_command(settings, index, port, run_dir, bind)
    env = dict(os.environ)
    if settings["backend"] == "vllm":
        env["CUDA_VISIBLE_DEVICES"] = _gpus(settings, index)
    log_path = run_dir / f"replica_{index}.log"
    parent = os.getpid()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            preexec_fn=lambda: _die_with_parent(parent),
        )  # fmt: skip
    log.info("replica %d (pid %d) on port %d: %s", index, proc.pid, port, shlex.join(cmd))
    host = "127.0.0.1" if bind in ("127.0.0.1", "localhost") else socket.gethostname()
    return Replica(index, port, cmd, log_path, proc, host)


def _launch(
    settings: dict,
    run_dir: Path,
    replicas: list[Replica],
    stopping: list,
    bind: str,
    owner: tuple[int | None, int | None] = (None, None),
) -> None:
    exclude = {urllib.parse.urlsplit(settings.get("api_base") or "").port or 0}
    for i in range(settings["parallel_servers"]):
        replicas.append(_spawn(settings, run_dir, i, exclude, bind))
    timeout = float(settings["startup_timeout_s"])
    deadline = time.monotonic() + timeout
    pending = {r.index for r in replicas}
    attempts = dict.fromkeys(pending, 1)
    while pending:
        if stopping:
            raise StartFailed(f"the model server was stopped during start-up ({stopping[0]})")
        if owner[0] and not alive(*owner):  # a vLLM start-up takes minutes of a GPU
            raise StartFailed(f"the owner process {owner[0]} exited during start-up")
        for i in sorted(pending):
            r = replicas[i]
            code = r.proc.poll()
            if code is not None:
                if _port_taken(r.port, bind) and attempts[i] < PORT_ATTEMPTS:
                    log.warning("replica %d lost port %d to another process; retrying", i, r.port)
                    attempts[i] += 1
                    replicas[i] = _spawn(settings, run_dir, i, exclude, bind)
                    continue
                raise StartFailed(
                    f"model server replica {i} exited with code {code} during start-up "
                    f"({shlex.join(r.cmd)}). Its log is {r.log}; last lines:\n{tail(r.log)}"
                )
            if answers(r.local_url):
                pending.discard(i)
        if pending and time.monotonic() > deadline:
            r = replicas[min(pending)]
            raise StartFailed(
                f"model server replica {r.index} did not answer /health within {timeout:g} s "
                f"(vlm.startup_timeout_s) ({shlex.join(r.cmd)}). Its log is {r.log}; "
                f"last lines:\n{tail(r.log)}"
            )
        if pending:
            time.sleep(0.1)


def _live_clients(run_dir: Path, beats: Freshness | None = None) -> int:
    """Registered client processes still running; forget the ones that are gone.

    Local clients are ``clients/<pid>`` (checked by pid and start time); with ``beats``
    (cross-node) they are ``clients/<host>-<pid>`` heartbeats, live while they change."""
    live = 0
    for path in (run_dir / "clients").glob("*"):
        if path.name.startswith("."):  # a heartbeat being written (temporary sibling)
            continue
        if beats is not None:
            if beats.check(path) is not None:
                live += 1
            else:
                beats.forget(path)
                path.unlink(missing_ok=True)
            continue
        try:
            ticks = int(path.read_text() or -1)
        except (OSError, ValueError):
            ticks = None
        if path.name.isdigit() and alive(int(path.name), ticks):
            live += 1
        else:
            path.unlink(missing_ok=True)
    return live


def _watch(settings: dict, run_dir: Path, replicas: list[Replica], watch: Watch, stopping) -> str:
    """Block until the server should stop; return why."""
    idle_s = float(settings["idle_timeout_s"])
    last_busy = time.monotonic()
    owner_beat = OwnerBeat(watch)
    owner = watch.owner
    while True:
        if stopping:
            return f"received {stopping[0]}"
        if owner[0] and not alive(*owner):
            return f"the owner process {owner[0]} exited"
        if reason := owner_beat.gone():
            return reason
        for r in replicas:
            if r.proc.poll() is not None:
                return f"replica {r.index} exited with code {r.proc.returncode}; see {r.log}"
        if _live_clients(run_dir, watch.beats):
            last_busy = time.monotonic()
        elif time.monotonic() - last_busy > idle_s:
            return f"no client for {idle_s:g} s (vlm.idle_timeout_s)"
        time.sleep(WATCH_S)


def _terminate(replicas: list[Replica]) -> None:
    procs: list[psutil.Process] = []
    for r in replicas:
        try:
            top = psutil.Process(r.proc.pid)
            procs += [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, left = psutil.wait_procs(procs, timeout=STOP_GRACE_S)
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=5)
    for r in replicas:
        r.proc.poll()


def supervise(
    settings: dict,
    run_dir: Path,
    owner: tuple[int | None, int | None] | Watch,
    bind: str = "127.0.0.1",
) -> int:
    """The supervisor process: start the replicas, publish server.json, watch, clean up."""
    watch = owner if isinstance(owner, Watch) else Watch(owner=owner)
    stopping: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stopping.append(signal.Signals(signum).name))
    slurm_job = os.environ.get("SLURM_JOB_ID")
    owner_pid = watch.owner[0] or watch.owner_pid
    log.info(
        "supervisor %d started: %s server for %s, %d replica(s), owner %s, on %s%s",
        os.getpid(), settings["backend"], settings["model_id"], settings["parallel_servers"],
        owner_pid, socket.gethostname(), f" (SLURM job {slurm_job})" if slurm_job else "",
    )  # fmt: skip
    replicas: list[Replica] = []
    me = {"pid": os.getpid(), "start_time": start_ticks(os.getpid())}
    if slurm_job:
        me |= {"slurm_job": slurm_job, "host": socket.gethostname()}

    def mine(record: dict | None) -> bool:
        if not record:
            return False
        return record.get("pid") == me["pid"] or bool(
            slurm_job and record.get("slurm_job") == slurm_job
        )

    try:
        _launch(settings, run_dir, replicas, stopping, bind, watch.owner)
    except StartFailed as exc:
        log.error("%s", exc)
        _terminate(replicas)
        write_json(run_dir / "failed.json", dict(me, message=str(exc)))
        return 1
    state = dict(
        me,
        urls=[r.url for r in replicas],
        replicas=[{"pid": r.proc.pid, "start_time": start_ticks(r.proc.pid)} for r in replicas],
        owner_pid=owner_pid,
        owner_start=watch.owner[1],
        model_id=settings["model_id"],
        backend=settings["backend"],
    )
    write_json(run_dir / "server.json", state)
    log.info("serving at %s", ", ".join(state["urls"]))
    try:
        reason = _watch(settings, run_dir, replicas, watch, stopping)
        log.info("stopping: %s", reason)
    finally:
        _terminate(replicas)
        for name in RECORDS:
            if mine(read_json(run_dir / name)):
                (run_dir / name).unlink(missing_ok=True)
    return 0

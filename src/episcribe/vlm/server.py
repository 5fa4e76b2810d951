"""Start, reuse and stop the model server: a resource of the run, outside the Snakemake DAG.

Why outside the DAG (measured in ``notes/snakemake_probe.md`` §2): if the server were a
file that annotate jobs take as input, re-creating it would make Snakemake re-run every
consumer job ("input updated by another job"), ``temp()``/``service()`` variants make
that worse, and ``ancient()`` silently defers real re-runs. So jobs call :func:`ensure`,
which returns the base URLs of a healthy server (starting it at most once per run), and
the Snakefile's ``onsuccess``/``onerror`` hooks call :func:`stop`.

This module alone owns the server's lifetime. Nothing else starts or kills it:

- ``ensure()`` takes ``flock`` on ``run_dir/server.lock``, registers the caller as a
  client, and reuses ``server.json`` when its supervisor is alive (pid *and* start time,
  against pid reuse) and every replica answers ``/health``. Otherwise it spawns a
  supervisor in its own session (``python -m episcribe.vlm.server supervise``), so the
  server outlives the job that happened to start it, and waits until it is up.
- The supervisor starts ``parallel_servers`` replicas (``PR_SET_PDEATHSIG``: a killed
  supervisor takes them along), polls ``/health``, writes ``server.json`` atomically, and
  then stops the replicas and exits when the owner (``EPISCRIBE_OWNER_PID``, the
  snakemake process) dies, when no live client has been registered for
  ``idle_timeout_s``, on SIGTERM/SIGINT, or when a replica dies. After ``kill -9`` of
  snakemake no hook runs; the owner watchdog is what stops a GPU server then.
- ``stop()`` signals the supervisor's process group (start-time verified), waits, and
  kills what is left after a grace period.

Files in ``run_dir`` (keep it on a local filesystem: ``flock`` is unreliable on some
network ones): ``server.lock``, ``supervisor.json`` (written at spawn, so ``stop()`` works
during start-up), ``server.json`` (written when healthy), ``failed.json`` (why a start
failed), ``supervisor.log``, ``replica_{i}.log``, ``clients/<pid>``.

On a cluster (``vlm.server_launcher: slurm``) the supervisor is not a local process but a
SLURM job: ``ensure()`` submits it with ``sbatch --parsable ... --wrap "python -m
episcribe.vlm.server supervise --cross-node ..."`` (plus ``vlm.slurm_server_args``, e.g. a GPU
partition), records the job id in ``supervisor.json`` and waits, without a deadline while the
job is PENDING, for ``server.json``. The supervisor binds its replicas on 0.0.0.0 and
publishes ``http://<its node's hostname>:<port>/v1`` URLs and its job id there, so jobs on any
node reuse it; ``stop()`` ``scancel``s the job. ``run_dir`` must then be on the filesystem
shared by the nodes (the workflow's ``.episcribe/server`` is). A pid on another node cannot
be watched, so liveness is by heartbeat files whose content keeps changing, judged by the
watcher's own clock (nodes' clocks may disagree and NFS caches mtimes):

- the owner (the main snakemake process) calls :func:`start_owner_heartbeat`, a daemon
  thread that rewrites ``owner.heartbeat`` ("<host> <pid> <time>") every
  ``EPISCRIBE_HEARTBEAT_S`` (5 s). The supervisor exits when the heartbeat of its owner pid
  has not changed for ``EPISCRIBE_HEARTBEAT_STALE_S`` (90 s): a SIGKILLed snakemake runs no
  hook, its heartbeat stops, the supervisor exits and the SLURM job ends. If no heartbeat
  of the owner ever appears, only the idle timeout applies (logged).
- every job that calls ``ensure()`` keeps ``clients/<host>-<pid>`` changing from a daemon
  thread while it lives; the idle timeout counts from the last client whose file changed.

CLI, for the Snakefile hooks and shells::

    python -m episcribe.vlm.server ensure --run-dir D --settings-json '{"backend": "fake"}'
    python -m episcribe.vlm.server stop --run-dir D
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from .. import config
from ..atomic import write_json, write_text
from ..errors import ServerError
from .sizing import DEFAULT_MAX_IMAGES, auto_max_model_len

log = logging.getLogger(__name__)

OWNER_ENV = "EPISCRIBE_OWNER_PID"
HEALTH_TIMEOUT_S = 2.0
STOP_GRACE_S = 10.0
WATCH_S = 0.25
PORT_ATTEMPTS = 3
PR_SET_PDEATHSIG = 1
# Cross-node liveness (vlm.server_launcher: slurm): heartbeat period and staleness bound,
# both overridable through the environment (tests use short ones).
HEARTBEAT_ENV, HEARTBEAT_S = "EPISCRIBE_HEARTBEAT_S", 5.0
STALE_ENV, HEARTBEAT_STALE_S = "EPISCRIBE_HEARTBEAT_STALE_S", 90.0
OWNER_HEARTBEAT = "owner.heartbeat"
# squeue states after which a job will never run again (or "" once squeue forgot it).
SLURM_DONE = {"", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
              "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"}  # fmt: skip
SQUEUE_POLL_S = 2.0
# Plain urllib, no proxies: health checks go to 127.0.0.1 or to the user's api_base.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- processes -----------------------------------------------------------------------


def start_ticks(pid: int | None) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if it is gone or a zombie."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def alive(pid: int | None, ticks: int | None) -> bool:
    """True if ``pid`` runs and is the same process that started at ``ticks``."""
    return ticks is not None and start_ticks(pid) == ticks


def exit_when_owner_dies(interval_s: float = 2.0) -> None:
    """End this process soon after the snakemake that started it dies.

    A killed snakemake runs no clean-up, and its running jobs would go on calling the
    model for a run nobody waits for. Only an owner on this host can be watched: on a
    cluster node the pid means nothing, so there the job is left alone.
    """
    pid, ticks = _owner()
    if pid is None:
        return

    def watch() -> None:
        while alive(pid, ticks):
            time.sleep(interval_s)
        log.error("snakemake (pid %d) is gone; ending this job", pid)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=watch, name="owner watchdog", daemon=True).start()


def set_owner(pid: int) -> None:
    """Make ``pid`` (the main snakemake process) the owner of the servers its jobs start:
    they inherit it through the environment, also on other nodes."""
    os.environ[OWNER_ENV] = str(pid)


def _owner() -> tuple[int | None, int | None]:
    raw = os.environ.get(OWNER_ENV, "")
    pid = int(raw) if raw.isdigit() else None
    ticks = start_ticks(pid)
    return (pid, ticks) if ticks is not None else (None, None)


def _owner_pid_env() -> int | None:
    """The owner pid as given, unchecked: on a cluster it lives on another node."""
    raw = os.environ.get(OWNER_ENV, "")
    return int(raw) if raw.isdigit() else None


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


# -- heartbeats (cross-node liveness) ---------------------------------------------------

_BEATS: dict[Path, threading.Thread] = {}
_BEATS_LOCK = threading.Lock()


def _beat(path: Path, text: str) -> None:
    try:
        # Atomic: a watcher reading a half-written (empty) beat would take the owner for gone.
        write_text(path, f"{text} {time.time():.3f}\n")
    except OSError:  # a full or flaky shared filesystem: try again next period
        pass


def start_heartbeat(path: str | os.PathLike, text: str) -> None:
    """Rewrite ``path`` with ``text`` and the time now and every heartbeat period, from a
    daemon thread, for as long as this process lives. Idempotent per path."""
    path = Path(path).absolute()
    period = _env_float(HEARTBEAT_ENV, HEARTBEAT_S)
    _beat(path, text)
    with _BEATS_LOCK:
        if path in _BEATS and _BEATS[path].is_alive():
            return

        def loop() -> None:
            while True:
                time.sleep(period)
                _beat(path, text)

        thread = threading.Thread(target=loop, name=f"heartbeat {path.name}", daemon=True)
        thread.start()
        _BEATS[path] = thread


def start_owner_heartbeat(run_dir: str | os.PathLike) -> None:
    """Called once by the main snakemake process (rules/common.smk): lets a model server
    running on another node see that the run is alive, and exit when it is not."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start_heartbeat(run_dir / OWNER_HEARTBEAT, f"{socket.gethostname()} {os.getpid()}")


class Freshness:
    """Whether heartbeat files still change, judged by this process's monotonic clock."""

    def __init__(self, stale_s: float):
        self.stale_s = stale_s
        self._seen: dict[Path, tuple[tuple, float]] = {}

    def check(self, path: Path) -> str | None:
        """The file's text if it changed within ``stale_s`` (a file seen for the first
        time counts as a change); None if it is stale or missing."""
        try:
            text = path.read_text(encoding="utf-8")
            signature = (path.stat().st_mtime_ns, text)
        except OSError:
            self._seen.pop(path, None)
            return None
        now = time.monotonic()
        previous = self._seen.get(path)
        if previous is None or previous[0] != signature:
            self._seen[path] = (signature, now)
            return text
        return text if now - previous[1] <= self.stale_s else None

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)


# -- SLURM -----------------------------------------------------------------------------


def slurm_state(job: str) -> str:
    """The job's squeue state ("" when squeue no longer knows it)."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "--states=all", "-j", str(job), "-o", "%T"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except FileNotFoundError:
        raise ServerError(
            "vlm.server_launcher is slurm but `squeue` is not installed on this host"
        ) from None
    except subprocess.TimeoutExpired:
        return "UNKNOWN"  # a busy controller: assume the job still exists
    if out.returncode != 0:
        # "Invalid job id specified" once the job left the controller's memory.
        return "" if "Invalid job id" in out.stderr else "UNKNOWN"
    return out.stdout.strip().splitlines()[0].strip() if out.stdout.strip() else ""


def _slurm_active(job: str) -> bool:
    return slurm_state(job) not in SLURM_DONE


def _running(record: dict) -> bool:
    """Whether the supervisor of a server.json / supervisor.json record still runs."""
    if record.get("slurm_job"):
        return _slurm_active(record["slurm_job"])
    return alive(record.get("pid"), record.get("start_time"))


# -- HTTP checks ---------------------------------------------------------------------


def _get_ok(url: str, api_key: str | None = None) -> bool:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with _HTTP.open(request, timeout=HEALTH_TIMEOUT_S) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _root(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def served_models(base_url: str, api_key: str | None = None) -> list[str] | None:
    """The model ids ``GET {base_url}/models`` lists, or None if it cannot be read."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(base_url.rstrip("/") + "/models", headers=headers)
    try:
        with _HTTP.open(request, timeout=HEALTH_TIMEOUT_S) as r:
            data = json.loads(r.read()).get("data")
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    except (urllib.error.URLError, OSError, ValueError, AttributeError, TypeError):
        return None


def check_serves(base_url: str, settings: dict) -> None:
    """Refuse a server that answers but does not serve ``vlm.model_id``, naming both."""
    models = served_models(base_url, settings.get("api_key"))
    if models is None:
        log.warning("%s answers but does not list its models; not checked", base_url)
        return
    if settings["model_id"] not in models:
        raise ServerError(
            f"the server at {base_url} serves {', '.join(map(repr, models)) or 'no model'}, "
            f"not vlm.model_id {settings['model_id']!r}: set vlm.model_id to the served model, "
            "or point vlm.api_base at a server of this one"
        )


def answers(base_url: str, api_key: str | None = None) -> bool:
    """Whether an OpenAI-compatible server answers at ``base_url`` (…/v1)."""
    return _get_ok(_root(base_url) + "/health") or _get_ok(
        base_url.rstrip("/") + "/models", api_key
    )


# -- ensure / stop -------------------------------------------------------------------


def ensure(settings: dict, run_dir: str | os.PathLike) -> list[str]:
    """Base URLs (ending in /v1) of a healthy server for ``settings`` (the vlm section)."""
    backend, api_base = settings["backend"], settings.get("api_base") or ""
    api_key = config.api_key(settings)
    if backend == "openai":
        if answers(api_base, api_key):
            check_serves(api_base, settings)
            return [api_base]
        raise ServerError(
            f"vlm.api_base {api_base} does not answer (GET {api_base.rstrip('/')}/models): "
            "check that the server runs and is reachable from this host, that the URL ends "
            "in /v1, and the API key (in the variable vlm.api_key_env names); or set "
            "vlm.backend to vllm to start one"
        )
    if backend not in ("vllm", "fake"):
        raise ServerError(f"vlm.backend {backend!r} is not one of vllm, openai, fake")
    if api_base and answers(api_base, api_key):
        check_serves(api_base, settings)
        log.info("using the server that already answers at %s", api_base)
        return [api_base]
    launcher = settings.get("server_launcher") or "local"
    if launcher not in ("local", "slurm"):
        raise ServerError(f"vlm.server_launcher {launcher!r} is not one of local, slurm")
    cluster = launcher == "slurm"
    if not cluster:
        check_local_start(settings)  # on a cluster the server's node, not this one, needs vllm
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # A queued GPU job may pend for long; flock is released if its holder dies anyway.
    lock_timeout = float("inf") if cluster else float(settings["startup_timeout_s"]) + 60
    with _locked(run_dir, lock_timeout):
        _register_client(run_dir, cluster)
        state = _read_json(run_dir / "server.json")
        if state and _running(state):
            same = (state["model_id"], state["backend"]) == (settings["model_id"], backend)
            if cluster:
                # Snakemake locks its working directory, so a server of another owner pid
                # is a leftover of an earlier run that watches a dead heartbeat: replace it.
                same = same and state.get("owner_pid") == _owner_pid_env()
            if same and all(answers(url) for url in state["urls"]):
                return state["urls"]
            owner_pid = state.get("owner_pid")
            if (
                not cluster
                and not same
                and owner_pid != _owner()[0]
                and alive(owner_pid, state.get("owner_start"))
            ):
                raise ServerError(
                    f"{run_dir} holds a {state['backend']} server for {state['model_id']!r} "
                    f"owned by another running workflow (pid {owner_pid}); wait for it, stop "
                    f"it with `python -m episcribe.vlm.server stop --run-dir {run_dir}`, or "
                    "run from another directory"
                )
            log.warning("replacing the server recorded in %s/server.json", run_dir)
            stop(run_dir)
        elif (sup := _read_json(run_dir / "supervisor.json")) and _running(sup):
            # A start whose caller died while waiting: let it finish instead of starting again.
            return _wait_ready(settings, run_dir, sup)
        return _submit(settings, run_dir) if cluster else _start(settings, run_dir)


def stop(run_dir: str | os.PathLike, grace_s: float = STOP_GRACE_S) -> bool:
    """Stop the run's server, if any; True if a live supervisor was stopped."""
    run_dir = Path(run_dir)
    state = _read_json(run_dir / "server.json") or {}
    sup = _read_json(run_dir / "supervisor.json") or state
    if sup.get("slurm_job"):
        return _stop_slurm(run_dir, sup["slurm_job"], grace_s)
    pid, ticks = sup.get("pid"), sup.get("start_time")
    was_alive = alive(pid, ticks)
    if was_alive:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while alive(pid, ticks) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Whatever is left of the group (the supervisor, replicas, their children).
        _signal_group(pid, signal.SIGKILL)
        log.info("stopped the model server (supervisor pid %d)", pid)
    for replica in state.get("replicas", []):
        if alive(replica["pid"], replica["start_time"]):
            os.kill(replica["pid"], signal.SIGKILL)
    for name in ("server.json", "supervisor.json"):
        record = _read_json(run_dir / name)
        if record and record.get("pid") == pid:
            (run_dir / name).unlink(missing_ok=True)
    return was_alive


def _stop_slurm(run_dir: Path, job: str, grace_s: float) -> bool:
    """scancel the supervisor's job (SIGTERM to it; SLURM kills what is left after KillWait)."""
    was_active = _slurm_active(job)
    if was_active:
        try:
            subprocess.run(["scancel", str(job)], capture_output=True, timeout=60)
        except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
            log.warning("could not scancel the model server's job %s: %s", job, exc)
        deadline = time.monotonic() + grace_s
        while _slurm_active(job) and time.monotonic() < deadline:
            time.sleep(0.5)
        log.info("cancelled the model server's SLURM job %s", job)
    for name in ("server.json", "supervisor.json"):
        record = _read_json(run_dir / name)
        if record and record.get("slurm_job") == job:
            (run_dir / name).unlink(missing_ok=True)
    return was_active


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def check_local_start(settings: dict) -> None:
    """Fail fast, before any waiting, on setups that cannot work."""
    if settings["backend"] != "vllm" or settings.get("serve_command", "auto") != "auto":
        return
    if shutil.which("vllm") is None:
        raise ServerError(
            "vlm.backend is vllm but the `vllm` command is not installed here: install it on "
            "a GPU host (pip install 'episcribe[vllm]'), point vlm.api_base at a running "
            "server with vlm.backend: openai, or give vlm.serve_command"
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    need = settings["parallel_servers"] * max(settings["num_gpus"], 1)
    if visible is not None and len([d for d in visible.split(",") if d]) < need:
        raise ServerError(
            f"vlm.parallel_servers x vlm.num_gpus needs {need} GPUs but "
            f"CUDA_VISIBLE_DEVICES={visible!r} lists fewer"
        )


@contextmanager
def _locked(run_dir: Path, timeout_s: float) -> Iterator[None]:
    path = run_dir / "server.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"another process has held {path} for {timeout_s:g} s while starting "
                        f"the model server; see {run_dir / 'supervisor.log'}"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _register_client(run_dir: Path, cluster: bool = False) -> None:
    clients = run_dir / "clients"
    clients.mkdir(exist_ok=True)
    if cluster:  # the supervisor may run on another node: keep a heartbeat instead
        start_heartbeat(clients / f"{socket.gethostname()}-{os.getpid()}", "client")
        return
    (clients / str(os.getpid())).write_text(str(start_ticks(os.getpid())))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _start(settings: dict, run_dir: Path) -> list[str]:
    owner_pid, owner_start = _owner()
    if owner_pid is None and (gone := _owner_pid_env()):
        # A job outlived its killed snakemake: a server now would hold the GPU until
        # vlm.idle_timeout_s with nobody to stop it.
        raise ServerError(
            f"the snakemake that started this job (pid {gone}) is gone: not starting a "
            "model server for it; run the workflow again to resume"
        )
    for name in ("server.json", "failed.json", "supervisor.json"):
        (run_dir / name).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "episcribe.vlm.server", "supervise", "--run-dir", str(run_dir)]
    cmd += ["--settings-json", json.dumps(settings)]
    if owner_pid:
        cmd += ["--owner-pid", str(owner_pid), "--owner-start", str(owner_start)]
    with open(run_dir / "supervisor.log", "ab") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    record = {"pid": proc.pid, "start_time": start_ticks(proc.pid)}
    write_json(run_dir / "supervisor.json", record)
    log.info("starting the %s model server for %s", settings["backend"], settings["model_id"])
    return _wait_ready(settings, run_dir, record)


def _sbatch_env() -> dict:
    """The submitting job's environment minus what describes its own allocation (SLURM_*;
    SBATCH_* are the user's defaults, e.g. SBATCH_ACCOUNT, and stay)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("SLURM_", "SLURMD_")) and k != "SLURM_CONF")
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)  # the server job's allocation sets its own
    return env


def _check_owner_beats(path: Path, owner_pid: int) -> None:
    """Refuse to start a server for a run that is gone (a job orphaned by kill -9 of
    snakemake would otherwise queue a GPU job that only lives until it sees the stale
    heartbeat). Wall clocks of two nodes are compared here, hence the wide margin."""
    try:
        fields = path.read_text(encoding="utf-8").split()
        age = time.time() - path.stat().st_mtime
    except OSError:
        return
    if len(fields) >= 2 and fields[1] == str(owner_pid) and age > 2 * _stale_s():
        raise ServerError(
            f"the snakemake process that started this job (pid {owner_pid} on {fields[0]}) "
            f"stopped its heartbeat {age:.0f} s ago ({path}): not starting a model server "
            "for a run that is gone"
        )


def _stale_s() -> float:
    return _env_float(STALE_ENV, HEARTBEAT_STALE_S)


def _submit(settings: dict, run_dir: Path) -> list[str]:
    """Submit the supervisor as a SLURM job; wait until it publishes server.json."""
    run_dir = run_dir.absolute()
    for name in ("server.json", "failed.json", "supervisor.json"):
        (run_dir / name).unlink(missing_ok=True)
    write_json(run_dir / "settings.json", settings)
    cmd = [sys.executable, "-m", "episcribe.vlm.server", "supervise", "--run-dir", str(run_dir)]
    cmd += ["--settings-json", f"@{run_dir / 'settings.json'}", "--cross-node"]
    cmd += ["--heartbeat-stale-s", str(_stale_s())]
    owner_pid = _owner_pid_env()
    if owner_pid:
        _check_owner_beats(run_dir / OWNER_HEARTBEAT, owner_pid)
        cmd += ["--owner-pid", str(owner_pid), "--owner-heartbeat", str(run_dir / OWNER_HEARTBEAT)]
    sbatch = [
        "sbatch", "--parsable", "--job-name=episcribe-server",
        f"--output={run_dir / 'supervisor.log'}", "--open-mode=append", f"--chdir={os.getcwd()}",
        *[str(a) for a in settings.get("slurm_server_args") or []],
        "--wrap", "exec " + shlex.join(cmd),
    ]  # fmt: skip
    try:
        out = subprocess.run(sbatch, capture_output=True, text=True, timeout=120, env=_sbatch_env())
    except FileNotFoundError:
        raise ServerError(
            "vlm.server_launcher is slurm but `sbatch` is not installed on this host"
        ) from None
    except subprocess.TimeoutExpired:
        raise ServerError("sbatch did not answer within 120 s; is slurmctld up?") from None
    if out.returncode != 0:
        raise ServerError(
            f"sbatch refused the model server job ({shlex.join(sbatch[:-2])} ...): "
            f"{out.stderr.strip()}; check vlm.slurm_server_args (partition, account, gres)"
        )
    job = out.stdout.strip().split(";")[0]
    record = {"slurm_job": job, "pid": None, "start_time": None}
    write_json(run_dir / "supervisor.json", record)
    log.info(
        "submitted the %s model server for %s as SLURM job %s",
        settings["backend"], settings["model_id"], job,
    )  # fmt: skip
    return _wait_ready(settings, run_dir, record)


def _wait_ready(settings: dict, run_dir: Path, record: dict) -> list[str]:
    """Wait for the supervisor of ``record`` (a local pid or a SLURM job) to publish URLs."""
    job = record.get("slurm_job")
    pid, ticks = record.get("pid"), record.get("start_time")

    def mine(other: dict | None) -> bool:
        if not other:
            return False
        return other.get("slurm_job") == job if job else other.get("pid") == pid

    budget = float(settings["startup_timeout_s"]) + 30
    deadline = time.monotonic() + budget
    next_squeue = 0.0
    pending_since: float | None = None
    while True:
        state = _read_json(run_dir / "server.json")
        if mine(state):
            return state["urls"]
        failed = _read_json(run_dir / "failed.json")
        if mine(failed):
            raise ServerError(failed["message"])
        running = True
        if job and time.monotonic() >= next_squeue:
            next_squeue = time.monotonic() + SQUEUE_POLL_S
            job_state = slurm_state(job)
            running = job_state not in SLURM_DONE
            if job_state == "PENDING":
                # Queueing time is the cluster's, not the server's start-up: no deadline.
                deadline = time.monotonic() + budget
                if pending_since is None or time.monotonic() - pending_since > 300:
                    log.info("the model server's SLURM job %s is pending", job)
                    pending_since = time.monotonic()
        elif not job:
            running = alive(pid, ticks)
        if not running:
            time.sleep(0.5)  # the job's last words may still be on their way to the log
            if mine(_read_json(run_dir / "failed.json")):
                raise ServerError(_read_json(run_dir / "failed.json")["message"])
            log_path = run_dir / "supervisor.log"
            what = f"SLURM job {job}" if job else "the model server's supervisor"
            raise ServerError(
                f"{what} exited before the server was up; see {log_path}:\n{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            stop(run_dir)
            raise ServerError(
                f"the model server did not come up in time; see {run_dir / 'supervisor.log'}"
            )
        time.sleep(0.1 if job else 0.05)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


# -- the supervisor ------------------------------------------------------------------


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
        ]  # fmt: skip
    cmd = ["vllm", "serve", settings["model_id"], "--host", bind, "--port", str(port)]
    cmd += model_args(settings)
    if settings.get("num_gpus", 0) > 1:
        cmd += ["--tensor-parallel-size", str(settings["num_gpus"])]
    return cmd + list(settings.get("extra_serve_args") or [])


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
                    f"({shlex.join(r.cmd)}). Its log is {r.log}; last lines:\n{_tail(r.log)}"
                )
            if answers(r.local_url):
                pending.discard(i)
        if pending and time.monotonic() > deadline:
            r = replicas[min(pending)]
            raise StartFailed(
                f"model server replica {r.index} did not answer /health within {timeout:g} s "
                f"(vlm.startup_timeout_s) ({shlex.join(r.cmd)}). Its log is {r.log}; "
                f"last lines:\n{_tail(r.log)}"
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


@dataclass
class Watch:
    """How the supervisor sees its owner and clients."""

    owner: tuple[int | None, int | None] = (None, None)  # a local pid and its start ticks
    owner_heartbeat: Path | None = None  # cross-node: the owner's heartbeat file
    owner_pid: int | None = None  # ... and the pid it must name
    beats: Freshness | None = None  # cross-node: clients and owner by heartbeat


class _OwnerBeat:
    """The owner's heartbeat: once seen, it must keep changing."""

    def __init__(self, watch: Watch):
        self.watch = watch
        self.seen = False
        self.warned = False
        self.started = time.monotonic()

    def gone(self) -> str | None:
        w = self.watch
        if w.owner_heartbeat is None or w.beats is None:
            return None
        text = w.beats.check(w.owner_heartbeat)
        fields = (text or "").split()
        if text is not None and len(fields) >= 2 and fields[1] == str(w.owner_pid):
            self.seen = True
            return None
        if self.seen and text is None:  # stale or removed, not merely unreadable this once
            return (
                f"the owner's heartbeat {w.owner_heartbeat} (pid {w.owner_pid}) has not "
                f"changed for {w.beats.stale_s:g} s"
            )
        if not self.warned and time.monotonic() - self.started > w.beats.stale_s:
            self.warned = True
            log.warning(
                "no heartbeat from owner pid %s in %s: only vlm.idle_timeout_s will stop this "
                "server (the main snakemake process should call start_owner_heartbeat)",
                w.owner_pid, w.owner_heartbeat,
            )  # fmt: skip
        return None


def _watch(settings: dict, run_dir: Path, replicas: list[Replica], watch: Watch, stopping) -> str:
    """Block until the server should stop; return why."""
    idle_s = float(settings["idle_timeout_s"])
    last_busy = time.monotonic()
    owner_beat = _OwnerBeat(watch)
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
        for name in ("server.json", "supervisor.json"):
            if mine(_read_json(run_dir / name)):
                (run_dir / name).unlink(missing_ok=True)
    return 0


# -- CLI -----------------------------------------------------------------------------


def _settings(raw: str) -> dict:
    """Settings from JSON text or @file, with the config schema's defaults filled in."""
    from ..config import resolve

    text = Path(raw[1:]).read_text(encoding="utf-8") if raw.startswith("@") else raw
    return resolve({"vlm": json.loads(text)})["vlm"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m episcribe.vlm.server")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("ensure", "stop", "supervise"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--run-dir", required=True, type=Path)
        if name != "stop":
            cmd.add_argument("--settings-json", default="{}", help="vlm settings: JSON or @file")
        if name == "supervise":
            cmd.add_argument("--owner-pid", type=int, default=None)
            cmd.add_argument("--owner-start", type=int, default=None)
            cmd.add_argument(
                "--cross-node",
                action="store_true",
                help="bind 0.0.0.0, publish this host's name, and see the owner and clients "
                "by heartbeat files (the supervisor runs as a SLURM job)",
            )
            cmd.add_argument("--owner-heartbeat", type=Path, default=None)
            cmd.add_argument("--heartbeat-stale-s", type=float, default=HEARTBEAT_STALE_S)
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        if args.command == "supervise":
            raw = args.settings_json
            text = Path(raw[1:]).read_text(encoding="utf-8") if raw.startswith("@") else raw
            settings = json.loads(text)
            if args.cross_node:
                watch = Watch(
                    owner_heartbeat=args.owner_heartbeat,
                    owner_pid=args.owner_pid,
                    beats=Freshness(args.heartbeat_stale_s),
                )
                code = supervise(settings, args.run_dir, watch, bind="0.0.0.0")
            else:
                owner = (args.owner_pid, args.owner_start)
                code = supervise(settings, args.run_dir, owner)
            log.info("supervisor %d exited with code %d", os.getpid(), code)
            return code
        if args.command == "stop":
            stop(args.run_dir)
            return 0
        print("\n".join(ensure(_settings(args.settings_json), args.run_dir)))
        return 0
    except ServerError as exc:
        print(f"episcribe: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

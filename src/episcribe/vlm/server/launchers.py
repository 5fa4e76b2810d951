"""Where the supervisor runs: a local process in its own session, or a SLURM job.

:func:`for_settings` picks the launcher a start uses (``vlm.server_launcher``);
:func:`for_record` the one that can check, wait for or stop the supervisor a record in
``run_dir`` names (a SLURM job id, or a local pid and start time), whatever the config
says now. Make one per call: the SLURM launcher keeps the state of one wait.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path

from episcribe.atomic import write_json
from episcribe.errors import ServerError
from episcribe.vlm.server.owner import (
    OWNER_HEARTBEAT,
    alive,
    owner,
    owner_pid_env,
    stale_s,
    start_heartbeat,
    start_ticks,
)
from episcribe.vlm.server.probe import read_json, tail

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0
# squeue states after which a job will never run again (or "" once squeue forgot it).
SLURM_DONE = {"", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
              "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"}  # fmt: skip
SQUEUE_POLL_S = 2.0
RECORDS = ("server.json", "supervisor.json")


class Launcher(ABC):
    """Start, wait for, check and stop the supervisor of a run's model server."""

    poll_s = 0.05  # how often a wait looks at run_dir

    @abstractmethod
    def preflight(self, settings: dict) -> None:
        """Fail fast, before any waiting, on setups that cannot work."""

    @abstractmethod
    def lock_timeout(self, settings: dict) -> float:
        """How long ensure() waits for another process's start to finish."""

    @abstractmethod
    def register_client(self, run_dir: Path) -> None:
        """Tell the supervisor that this process uses the server."""

    def same_owner(self, state: dict) -> bool:
        """Whether the server of ``state`` belongs to this run."""
        return True

    def other_live_owner(self, state: dict) -> bool:
        """Whether the server of ``state`` belongs to another workflow that still runs."""
        return False

    @abstractmethod
    def start(self, settings: dict, run_dir: Path) -> list[str]:
        """Start a supervisor; wait until it publishes URLs."""

    @abstractmethod
    def running(self, record: dict) -> bool:
        """Whether the supervisor of a server.json / supervisor.json record still runs."""

    def status(self, record: dict) -> str:
        """While waiting: "running", "pending" (queued: no deadline yet) or "gone"."""
        return "running" if self.running(record) else "gone"

    @abstractmethod
    def mine(self, record: dict, other: dict | None) -> bool:
        """Whether ``other`` (a record read from run_dir) is of the supervisor of ``record``."""

    @abstractmethod
    def describe(self, record: dict) -> str:
        """What the supervisor is, for an error message."""

    @abstractmethod
    def stop(self, run_dir: Path, record: dict, state: dict, grace_s: float) -> bool:
        """Stop the supervisor of ``record``; True if it was running."""

    def forget(self, run_dir: Path, record: dict) -> None:
        """Remove the records of the supervisor of ``record``."""
        for name in RECORDS:
            if self.mine(record, read_json(run_dir / name)):
                (run_dir / name).unlink(missing_ok=True)

    def wait_ready(self, settings: dict, run_dir: Path, record: dict) -> list[str]:
        """Wait for the supervisor of ``record`` to publish URLs."""
        budget = float(settings["startup_timeout_s"]) + 30
        deadline = time.monotonic() + budget
        while True:
            state = read_json(run_dir / "server.json")
            if self.mine(record, state):
                return state["urls"]
            failed = read_json(run_dir / "failed.json")
            if self.mine(record, failed):
                raise ServerError(failed["message"])
            status = self.status(record)
            if status == "pending":
                # Queueing time is the cluster's, not the server's start-up: no deadline.
                deadline = time.monotonic() + budget
            elif status == "gone":
                time.sleep(0.5)  # the job's last words may still be on their way to the log
                if self.mine(record, failed := read_json(run_dir / "failed.json")):
                    raise ServerError(failed["message"])
                log_path = run_dir / "supervisor.log"
                raise ServerError(
                    f"{self.describe(record)} exited before the server was up; see {log_path}:"
                    f"\n{tail(log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop(run_dir, record, read_json(run_dir / "server.json") or {}, STOP_GRACE_S)
                raise ServerError(
                    f"the model server did not come up in time; see {run_dir / 'supervisor.log'}"
                )
            time.sleep(self.poll_s)


def for_settings(settings: dict) -> Launcher:
    """The launcher ``vlm.server_launcher`` names."""
    name = settings.get("server_launcher") or "local"
    if name not in LAUNCHERS:
        raise ServerError(f"vlm.server_launcher {name!r} is not one of local, slurm")
    return LAUNCHERS[name]()


def for_record(record: dict) -> Launcher:
    """The launcher that started the supervisor of ``record``."""
    return SlurmLauncher() if record.get("slurm_job") else LocalLauncher()


def _supervise_cmd(run_dir: Path) -> list[str]:
    """The supervisor's command line, up to its settings; clears the previous start's records."""
    for name in ("server.json", "failed.json", "supervisor.json"):
        (run_dir / name).unlink(missing_ok=True)
    return [sys.executable, "-m", "episcribe.vlm.server", "supervise", "--run-dir", str(run_dir)]


# -- a local process ---------------------------------------------------------------------


def check_local_start(settings: dict) -> None:
    """Fail fast, before any waiting, on a local start that cannot work."""
    if settings["backend"] != "vllm" or settings.get("serve_command", "auto") != "auto":
        return
    if shutil.which("vllm") is None:
        raise ServerError(
            "vlm.backend is vllm but the `vllm` command is not installed here: install it "
            "on a GPU host (pip install 'episcribe[vllm]'), point vlm.api_base at a running "
            "server with vlm.backend: openai, or give vlm.serve_command"
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    need = settings["parallel_servers"] * max(settings["num_gpus"], 1)
    if visible is not None and len([d for d in visible.split(",") if d]) < need:
        raise ServerError(
            f"vlm.parallel_servers x vlm.num_gpus needs {need} GPUs but "
            f"CUDA_VISIBLE_DEVICES={visible!r} lists fewer"
        )


class LocalLauncher(Launcher):
    """The supervisor is a process on this host in its own session, so it outlives the job
    that started it; it is known by pid and start time."""

    def preflight(self, settings: dict) -> None:
        check_local_start(settings)

    def lock_timeout(self, settings: dict) -> float:
        return float(settings["startup_timeout_s"]) + 60

    def register_client(self, run_dir: Path) -> None:
        clients = run_dir / "clients"
        clients.mkdir(exist_ok=True)
        (clients / str(os.getpid())).write_text(str(start_ticks(os.getpid())))

    def other_live_owner(self, state: dict) -> bool:
        owner_pid = state.get("owner_pid")
        return owner_pid != owner()[0] and alive(owner_pid, state.get("owner_start"))

    def start(self, settings: dict, run_dir: Path) -> list[str]:
        owner_pid, owner_start = owner()
        if owner_pid is None and (gone := owner_pid_env()):
            # A job outlived its killed snakemake: a server now would hold the GPU until
            # vlm.idle_timeout_s with nobody to stop it.
            raise ServerError(
                f"the snakemake that started this job (pid {gone}) is gone: not starting a "
                "model server for it; run the workflow again to resume"
            )
        cmd = _supervise_cmd(run_dir) + ["--settings-json", json.dumps(settings)]
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
        return self.wait_ready(settings, run_dir, record)

    def running(self, record: dict) -> bool:
        return alive(record.get("pid"), record.get("start_time"))

    def mine(self, record: dict, other: dict | None) -> bool:
        return bool(other) and other.get("pid") == record.get("pid")

    def describe(self, record: dict) -> str:
        return "the model server's supervisor"

    def stop(self, run_dir: Path, record: dict, state: dict, grace_s: float) -> bool:
        """SIGTERM the supervisor's process group, wait, SIGKILL what is left."""
        pid, ticks = record.get("pid"), record.get("start_time")
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
        self.forget(run_dir, record)
        return was_alive


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- a SLURM job -------------------------------------------------------------------------


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


class SlurmLauncher(Launcher):
    """The supervisor is a SLURM job, known by its job id; it may run on another node, so
    clients and the owner are seen by heartbeat files in the shared ``run_dir``."""

    poll_s = 0.1

    def __init__(self) -> None:
        self._next_squeue = 0.0
        self._pending_since: float | None = None

    def preflight(self, settings: dict) -> None:
        pass  # the server's node, not this one, needs vllm and the GPUs

    def lock_timeout(self, settings: dict) -> float:
        return float("inf")  # a queued GPU job may pend for long; flock dies with its holder

    def register_client(self, run_dir: Path) -> None:
        clients = run_dir / "clients"
        clients.mkdir(exist_ok=True)
        start_heartbeat(clients / f"{socket.gethostname()}-{os.getpid()}", "client")

    def same_owner(self, state: dict) -> bool:
        # Snakemake locks its working directory, so a server of another owner pid is a
        # leftover of an earlier run that watches a dead heartbeat: replace it.
        return state.get("owner_pid") == owner_pid_env()

    def start(self, settings: dict, run_dir: Path) -> list[str]:
        """Submit the supervisor as a SLURM job; wait until it publishes server.json."""
        run_dir = run_dir.absolute()
        cmd = _supervise_cmd(run_dir)
        write_json(run_dir / "settings.json", settings)
        cmd += ["--settings-json", f"@{run_dir / 'settings.json'}", "--cross-node"]
        cmd += ["--heartbeat-stale-s", str(stale_s())]
        owner_pid = owner_pid_env()
        if owner_pid:
            heartbeat = run_dir / OWNER_HEARTBEAT
            _check_owner_beats(heartbeat, owner_pid)
            cmd += ["--owner-pid", str(owner_pid), "--owner-heartbeat", str(heartbeat)]
        sbatch = [
            "sbatch", "--parsable", "--job-name=episcribe-server",
            f"--output={run_dir / 'supervisor.log'}", "--open-mode=append",
            f"--chdir={os.getcwd()}", *[str(a) for a in settings.get("slurm_server_args") or []],
            "--wrap", "exec " + shlex.join(cmd),
        ]  # fmt: skip
        try:
            out = subprocess.run(
                sbatch, capture_output=True, text=True, timeout=120, env=_sbatch_env()
            )
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
        return self.wait_ready(settings, run_dir, record)

    def running(self, record: dict) -> bool:
        return slurm_state(record["slurm_job"]) not in SLURM_DONE

    def status(self, record: dict) -> str:
        if time.monotonic() < self._next_squeue:
            return "running"
        self._next_squeue = time.monotonic() + SQUEUE_POLL_S
        job = record["slurm_job"]
        state = slurm_state(job)
        if state == "PENDING":
            if self._pending_since is None or time.monotonic() - self._pending_since > 300:
                log.info("the model server's SLURM job %s is pending", job)
                self._pending_since = time.monotonic()
            return "pending"
        return "gone" if state in SLURM_DONE else "running"

    def mine(self, record: dict, other: dict | None) -> bool:
        return bool(other) and other.get("slurm_job") == record["slurm_job"]

    def describe(self, record: dict) -> str:
        return f"SLURM job {record['slurm_job']}"

    def stop(self, run_dir: Path, record: dict, state: dict, grace_s: float) -> bool:
        """scancel the job (SIGTERM to it; SLURM kills what is left after KillWait)."""
        job = record["slurm_job"]
        was_active = self.running(record)
        if was_active:
            try:
                subprocess.run(["scancel", str(job)], capture_output=True, timeout=60)
            except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
                log.warning("could not scancel the model server's job %s: %s", job, exc)
            deadline = time.monotonic() + grace_s
            while self.running(record) and time.monotonic() < deadline:
                time.sleep(0.5)
            log.info("cancelled the model server's SLURM job %s", job)
        self.forget(run_dir, record)
        return was_active


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
    if len(fields) >= 2 and fields[1] == str(owner_pid) and age > 2 * stale_s():
        raise ServerError(
            f"the snakemake process that started this job (pid {owner_pid} on {fields[0]}) "
            f"stopped its heartbeat {age:.0f} s ago ({path}): not starting a model server "
            "for a run that is gone"
        )


LAUNCHERS: dict[str, type[Launcher]] = {"local": LocalLauncher, "slurm": SlurmLauncher}

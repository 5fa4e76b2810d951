"""Who the server works for: process identity, the owner watch, heartbeats.

A local pid is checked with its start time (against pid reuse); a pid on another node
cannot be checked at all, so across nodes liveness is a heartbeat file whose content
keeps changing, judged by the watcher's own clock.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from episcribe.atomic import write_text

log = logging.getLogger(__name__)

OWNER_ENV = "EPISCRIBE_OWNER_PID"
# Cross-node liveness (vlm.server_launcher: slurm): heartbeat period and staleness bound,
# both overridable through the environment (tests use short ones).
HEARTBEAT_ENV, HEARTBEAT_S = "EPISCRIBE_HEARTBEAT_S", 5.0
STALE_ENV, HEARTBEAT_STALE_S = "EPISCRIBE_HEARTBEAT_STALE_S", 90.0
OWNER_HEARTBEAT = "owner.heartbeat"


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
    pid, ticks = owner()
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


def owner() -> tuple[int | None, int | None]:
    """The owner (EPISCRIBE_OWNER_PID) and its start ticks if it runs on this host."""
    pid = owner_pid_env()
    ticks = start_ticks(pid)
    return (pid, ticks) if ticks is not None else (None, None)


def owner_pid_env() -> int | None:
    """The owner pid as given, unchecked: on a cluster it lives on another node."""
    raw = os.environ.get(OWNER_ENV, "")
    return int(raw) if raw.isdigit() else None


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


def stale_s() -> float:
    """How long a heartbeat may stand still before its writer counts as gone."""
    return _env_float(STALE_ENV, HEARTBEAT_STALE_S)


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


# -- the supervisor's view of its owner --------------------------------------------------


@dataclass
class Watch:
    """How the supervisor sees its owner and clients."""

    owner: tuple[int | None, int | None] = (None, None)  # a local pid and its start ticks
    owner_heartbeat: Path | None = None  # cross-node: the owner's heartbeat file
    owner_pid: int | None = None  # ... and the pid it must name
    beats: Freshness | None = None  # cross-node: clients and owner by heartbeat


class OwnerBeat:
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

"""Stopping a run and starting it again: the two places where Snakemake needs help.

- SIGTERM (SLURM time limits, ``timeout``, systemd) could hang snakemake 9.27.1 forever:
  its handler, ``JobScheduler.exit_gracefully``, takes the scheduler's ``threading.Lock``
  and then releases a ``threading.Semaphore`` (which takes a lock of its own). Python runs
  signal handlers on the main thread, between two of its steps; when the main thread
  holds either lock at that moment (post-processing a finished job, or waiting on the
  semaphore), the handler waits for itself. :func:`guard_sigterm` replaces the handler
  with one that takes no lock: it writes a byte to a pipe, and a helper thread does the
  scheduler's work with the locks taken normally. 9.27.1 is the newest release and has
  the bug, hence the exact pin in pyproject. Snakemake's graceful stop then waits for its
  running jobs, and an annotate job may wait minutes on a stuck model call: the helper
  thread passes SIGTERM on to the annotate jobs, which cancel their calls
  (:mod:`episcribe.pipeline.job_stop`) and exit within seconds.
- ``kill -9`` of ``episcribe`` would leave snakemake, in a process group of its own, to
  run to the end. :func:`die_with_parent`, run in the child between fork and exec, asks
  Linux to send it SIGTERM when ``episcribe`` dies (``PR_SET_PDEATHSIG``): snakemake then
  stops as after any SIGTERM, and its owner watch ends the jobs and the model server.
- ``kill -9`` of snakemake leaves its lock files in ``.snakemake/locks``, and the next run
  stops with "Directory cannot be locked". :func:`unlock_if_abandoned` removes them when
  no snakemake process works in the directory any more.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from episcribe.errors import UserError

# Jobs of a killed snakemake notice within ~2 s that it is gone (server.exit_when_owner_dies).
HOLDERS_GRACE_S = 5.0
# The script of the jobs that call the model (rules/annotate.smk).
ANNOTATE_SCRIPT = "annotate_episodes.py"
SHELLS = {"sh", "dash", "bash", "zsh"}


def guard_sigterm() -> None:
    """Make snakemake's SIGTERM handler lock-free (see the module docstring)."""
    from snakemake.scheduling.job_scheduler import JobScheduler

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    asked: list = []  # schedulers that got SIGTERM; list.append takes no lock

    def stop_gracefully() -> None:
        while os.read(read_end, 1):
            scheduler = asked.pop()
            with scheduler._lock:
                scheduler._user_kill = "graceful"
            scheduler._open_jobs.release()
            stop_annotate_jobs()

    def exit_gracefully(self, *args) -> None:
        asked.append(self)
        try:
            os.write(write_end, b"x")
        except BlockingIOError:  # a thousand stops already pending
            pass

    threading.Thread(target=stop_gracefully, name="episcribe sigterm", daemon=True).start()
    JobScheduler.exit_gracefully = exit_gracefully


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for a child that gets SIGTERM when this process dies (Linux;
    elsewhere None). libc is loaded here, in the parent: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def stop_annotate_jobs() -> None:
    """SIGTERM to this process's annotate jobs (the Python processes, not the shells
    snakemake starts them through: a shell's exit would fail the job at once)."""
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = proc.cmdline()
            if (
                cmdline
                and Path(cmdline[0]).name not in SHELLS
                and any(part.endswith(ANNOTATE_SCRIPT) for part in cmdline[1:])
            ):
                proc.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def snakemake_processes(workdir: Path) -> list[psutil.Process]:
    """Live snakemake processes (main or job) whose working directory is ``workdir``."""
    workdir = workdir.resolve()
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            cmdline = proc.info["cmdline"] or []
            if any("snakemake" in part for part in cmdline[:3]) and Path(proc.cwd()) == workdir:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def unlock_if_abandoned(workdir: Path, grace_s: float = HOLDERS_GRACE_S) -> str | None:
    """Remove the locks a killed snakemake left in ``workdir``; say so, or None if there
    were none. A snakemake still working there is an error that names its pid."""
    locks = workdir / ".snakemake" / "locks"
    files = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    if not files:
        return None
    deadline = time.monotonic() + grace_s
    while holders := snakemake_processes(workdir):
        if time.monotonic() > deadline:
            pids = ", ".join(str(p.pid) for p in holders)
            raise UserError(
                f"snakemake is still running in {workdir} (pid {pids}): wait for it to "
                "finish or stop it; two runs must not share a directory"
            )
        time.sleep(0.2)
    for path in files:
        path.unlink(missing_ok=True)
    return (
        f"a previous run in {workdir} was killed and left Snakemake's lock; no snakemake "
        "runs here any more, so it was removed and this run resumes"
    )

"""Run snakemake as a child of ``episcribe``: its output, signals, and the end of a run.

``episcribe`` stays the parent so that a stop is one line, not pages of tracebacks.
Snakemake runs in a process group of its own, and ``episcribe`` passes Ctrl-C (SIGINT),
SIGTERM and SIGHUP on to that group (snakemake and its jobs) exactly once: so a stop
works the same in a terminal, under ``nohup`` or ``&`` (where a shell starts children
with SIGINT ignored) and under SLURM. The jobs cancel their model calls, snakemake exits,
every finished episode stays, and the next run resumes. Snakemake dies with
``episcribe``: a ``kill -9`` of ``episcribe`` sends it SIGTERM (stopping.die_with_parent).
Snakemake's full output is in ``.snakemake/log/`` whatever is shown here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

from episcribe.command import stopping
from episcribe.command.progress import Tracker, View
from episcribe.pipeline.workflow import WorkflowPlan

# Snakemake's lines about its own set-up, shown again with --show-jobs.
NOISE = ("Using workflow specific profile", "Config file ", "Assuming unrestricted shared")


def run(
    cmd: list[str],
    plan: WorkflowPlan | None = None,
    show_jobs: bool = False,
    progress_every_s: float = 30.0,
) -> int:
    """Run snakemake; ``plan`` (the run's, from the preflight) turns the progress view on."""
    note = stopping.unlock_if_abandoned(Path.cwd())
    if note:
        print(f"episcribe: {note}", file=sys.stderr)
    if not show_jobs:
        # Errors stay (a job's one-line reason); job blocks and step counts go.
        cmd = [*cmd, "--quiet", "all"]
    # Handlers first: a child started while SIGINT is ignored (``&``, nohup) would
    # ignore it too, and a Python handler is reset to the default in the child.
    stop = _Stop()
    view = View(Tracker(plan), sys.stderr, progress_every_s) if plan else None
    stop.view = view
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, process_group=0, preexec_fn=stopping.die_with_parent(),
    )  # fmt: skip
    stop.attach(proc)
    assert proc.stdout is not None
    with view or nullcontext():
        for line in proc.stdout:
            if stop.signal or (not show_jobs and line.startswith(NOISE)):
                continue
            if view is not None:
                view.message(line)
            else:
                sys.stderr.write(line)
    code = proc.wait()
    if stop.signal:
        print(
            f"episcribe: stopped ({stop.signal}); finished episodes are kept, run the same "
            "command again to resume",
            file=sys.stderr,
        )
        return 128 + stop.number
    if code != 0 and not show_jobs:
        logs = sorted(Path(".snakemake", "log").glob("*.snakemake.log"))
        where = f": Snakemake's full log is {logs[-1]}" if logs else ""
        print(f"episcribe: the run failed (exit code {code}){where}", file=sys.stderr)
    return code


class _Stop:
    """Remembers the first stop signal and passes every one on to snakemake."""

    def __init__(self) -> None:
        self.signal = ""
        self.number = 0
        self.proc: subprocess.Popen | None = None
        self.view: View | None = None
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            # Under nohup a hang-up is ignored, and snakemake inherits that.
            if number == signal.SIGINT or signal.getsignal(number) is not signal.SIG_IGN:
                signal.signal(number, self._on_signal)

    def attach(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        if self.number:  # arrived while snakemake was being started
            self._pass_on(self.number)

    def _on_signal(self, number: int, _frame) -> None:
        if not self.signal:
            self.signal = "Ctrl-C" if number == signal.SIGINT else signal.strsignal(number)
            self.number = number
            if self.view is not None:
                self.view.halted = True
        if self.proc is not None:
            self._pass_on(number)

    def _pass_on(self, number: int) -> None:
        """To snakemake's group: its jobs stop their model calls without waiting for it."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, number)
        except ProcessLookupError:  # it has exited already
            pass

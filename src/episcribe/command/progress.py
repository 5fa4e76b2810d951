"""The run's progress, per module: episodes done / total, model calls, failures, rate,
time left.

Read from the files the jobs write, never from Snakemake's messages: an episode is done
when its staging file exists, and every model call is a line of its job's
``*.metrics.jsonl`` (``outcome`` other than ``ok`` is a failure). In a terminal the view
is a live table (rich) under the messages; elsewhere (a log file, SLURM) it is one line
every ``every_s`` seconds and one at the end.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from episcribe.pipeline.staging import staging_paths
from episcribe.pipeline.workflow import WorkflowPlan


@dataclass
class ModuleProgress:
    module: str
    total: int
    done: int = 0
    done_at_start: int = 0
    calls: int = 0
    failed: int = 0

    def rate(self, elapsed_s: float) -> float:
        """Episodes per second finished by this run."""
        return (self.done - self.done_at_start) / elapsed_s if elapsed_s > 0 else 0.0

    def left_s(self, elapsed_s: float) -> float | None:
        rate = self.rate(elapsed_s)
        return (self.total - self.done) / rate if rate > 0 else None


class Tracker:
    """Counts what the jobs wrote since the run started."""

    def __init__(self, plan: WorkflowPlan):
        self.started = time.monotonic()
        self._staging = {
            m: staging_paths(plan.paths.staging, plan.episodes, m) for m in plan.modules
        }
        self._metrics = {m: plan.paths.jobs(m) for m in plan.modules}
        self._offsets: dict[Path, int] = {}
        self.modules = [ModuleProgress(m, len(self._staging[m])) for m in plan.modules]
        self.poll()
        for status in self.modules:  # calls of earlier runs are not this run's
            status.done_at_start, status.calls, status.failed = status.done, 0, 0

    def poll(self) -> list[ModuleProgress]:
        for status in self.modules:
            status.done = sum(Path(p).exists() for p in self._staging[status.module])
            calls, failed = self._new_calls(self._metrics[status.module])
            status.calls += calls
            status.failed += failed
        return self.modules

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _new_calls(self, folder: Path) -> tuple[int, int]:
        calls = failed = 0
        for path in folder.glob("*.metrics.jsonl"):
            try:
                size = path.stat().st_size
                offset = self._offsets.get(path, 0)
                if size < offset:  # a re-run job started its file anew
                    offset = 0
                if size == offset:
                    continue
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read(size - offset)
            except OSError:
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits
            self._offsets[path] = offset + len(complete)
            for line in complete.splitlines():
                calls += 1
                try:
                    failed += json.loads(line).get("outcome") != "ok"
                except ValueError:
                    failed += 1
        return calls, failed


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def summary_line(modules: list[ModuleProgress], elapsed_s: float) -> str:
    parts = [
        f"{m.module} {m.done}/{m.total} ({m.calls} calls, {m.failed} failed, "
        f"{m.rate(elapsed_s) * 60:.1f}/min, {duration(m.left_s(elapsed_s))} left)"
        for m in modules
    ]
    return f"[{duration(elapsed_s)}] episodes " + ", ".join(parts)


def table(modules: list[ModuleProgress], elapsed_s: float) -> Table:
    view = Table(title=f"episcribe  {duration(elapsed_s)}", title_justify="left", box=None)
    for name in ("module", "episodes", "model calls", "failed", "episodes/min", "left"):
        view.add_column(name, justify="left" if name == "module" else "right")
    for m in modules:
        view.add_row(
            m.module,
            f"{m.done}/{m.total}",
            str(m.calls),
            str(m.failed),
            f"{m.rate(elapsed_s) * 60:.1f}",
            duration(m.left_s(elapsed_s)),
        )
    return view


class View:
    """Shows the tracker's numbers on ``stream`` while messages are printed above them."""

    def __init__(self, tracker: Tracker, stream: TextIO = sys.stderr, every_s: float = 30.0):
        self.tracker = tracker
        self.stream = stream
        # Set from a signal handler, so a plain attribute (taking a lock there can hang).
        self.halted = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._live: Live | None = None
        if stream.isatty():
            # Drawn by our own ticker, so nothing is redrawn once the run is halted.
            self._live = Live(console=Console(file=stream), auto_refresh=False, transient=True)
        self._period = 0.5 if self._live else every_s
        self._thread = threading.Thread(target=self._tick, name="progress", daemon=True)

    def __enter__(self) -> View:
        if self._live is not None:
            self._live.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        if self._live is not None:
            self._live.stop()  # transient: the live table is erased ...
        if not self.halted:  # ... and the final numbers stay
            self._show(final=True)

    def message(self, text: str) -> None:
        """A line of snakemake's output, shown above the view."""
        with self._lock:
            if self._live is not None:
                self._live.console.print(text.rstrip("\n"), markup=False, highlight=False)
            else:
                self.stream.write(text)
                self.stream.flush()

    def _tick(self) -> None:
        while not self._done.wait(self._period):
            if not self.halted:
                self._show()

    def _show(self, final: bool = False) -> None:
        modules, elapsed = self.tracker.poll(), self.tracker.elapsed()
        with self._lock:
            if self._live is None:
                self.stream.write(f"episcribe: {summary_line(modules, elapsed)}\n")
                self.stream.flush()
            elif final:
                self._live.console.print(table(modules, elapsed))
            else:
                self._live.update(table(modules, elapsed), refresh=True)

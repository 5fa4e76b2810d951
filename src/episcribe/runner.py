"""Run snakemake as a child of ``episcribe``: its output, signals, and the end of a run.

``episcribe`` stays the parent so that a stop is one line, not pages of tracebacks:
Ctrl-C reaches snakemake and its jobs directly (one process group, as in a terminal),
and SIGTERM sent to ``episcribe`` is passed on to snakemake; either way snakemake kills
its jobs and exits, every finished episode stays, and the next run resumes. Snakemake's
full output is in ``.snakemake/log/`` whatever is shown here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from . import stopping


def run(cmd: list[str], show_jobs: bool = False) -> int:
    note = stopping.unlock_if_abandoned(Path.cwd())
    if note:
        print(f"episcribe: {note}", file=sys.stderr)
    if not show_jobs:
        cmd = [*cmd, "--quiet", "rules"]
    stop = _Stop()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop.install(proc)
    assert proc.stdout is not None
    for line in proc.stdout:
        if not stop.signal:
            sys.stderr.write(line)
    code = proc.wait()
    if stop.signal:
        print(
            f"episcribe: stopped ({stop.signal}); finished episodes are kept, run the same "
            "command again to resume",
            file=sys.stderr,
        )
        return 128 + stop.number
    return code


class _Stop:
    """Remembers the first stop signal; SIGTERM is passed on to snakemake."""

    def __init__(self) -> None:
        self.signal = ""
        self.number = 0

    def install(self, proc: subprocess.Popen) -> None:
        def on_signal(number: int, _frame) -> None:
            if not self.signal:
                self.signal = "Ctrl-C" if number == signal.SIGINT else signal.strsignal(number)
                self.number = number
            if number != signal.SIGINT:  # Ctrl-C reached snakemake already
                proc.send_signal(number)

        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, on_signal)

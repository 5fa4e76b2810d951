"""Stopping trials: does SIGTERM ever hang snakemake, does a run resume after kill -9?

    python bench/bench_stopping.py [--sigterm-trials 40] [--kill-trials 10] [--unguarded]

SIGTERM: runs the workflow (`python -m snakemake`, a throw-away copy of the workflow, the
fake model server, one job per episode) and sends SIGTERM within 0-50 ms of a
"Finished jobid" line, i.e. while snakemake post-processes a finished job, to snakemake
alone or to its process group (as SLURM and a terminal do); a run still alive 60 s later
counts as hung (and is killed). Every trial starts from an empty workspace.
`--unguarded` removes episcribe's guard (episcribe.command.stopping.guard_sigterm) from the
copy, to see Snakemake's own handler.

kill -9: starts `episcribe` (the installed command), kills its snakemake with SIGKILL
once two staging files exist, then runs the same `episcribe` command again and counts
the runs that finished without `--unlock` and with every staging file.
Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from smk import Workspace  # noqa: E402
from synth import make_dataset  # noqa: E402
from test_stopping import sigterm_trial  # noqa: E402


def sigterm_trials(dataset: Path, work: Path, trials: int, unguarded: bool) -> None:
    ws = Workspace(work / "sigterm", dataset, workflow__episodes_per_job=1,
                   vlm__fake__latency_ms=20)  # fmt: skip
    if unguarded:
        common = ws.root / "rules" / "common.smk"
        common.write_text(common.read_text().replace("    guard_sigterm()\n", "    pass\n"))
    rng = random.Random(1)
    outcomes, started = [], time.monotonic()
    for trial in range(trials):
        outcomes.append(sigterm_trial(ws, rng))
        print(f"  trial {trial + 1}: {outcomes[-1]}", flush=True)
    tried = sum(o in ("exited", "hung") for o in outcomes)
    label = "unguarded" if unguarded else "guarded"
    print(f"SIGTERM ({label}): {tried} tried, {outcomes.count('hung')} hung, "
          f"{trials - tried} runs ended before a job finished "
          f"({time.monotonic() - started:.0f} s)")  # fmt: skip


def kill_trials(dataset: Path, work: Path, trials: int) -> None:
    from test_stopping import kill_then_rerun

    resumed = 0
    for trial in range(trials):
        ok, note = kill_then_rerun(dataset, work / f"kill{trial}")
        resumed += ok
        print(f"  trial {trial + 1}: {'resumed' if ok else 'FAILED'} {note}", flush=True)
    print(f"kill -9 then the same command: {trials} tried, {resumed} resumed to the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigterm-trials", type=int, default=40)
    parser.add_argument("--kill-trials", type=int, default=10)
    parser.add_argument("--unguarded", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = make_dataset(work / "data" / "synth", seed=5, episodes=6, seconds=2.0,
                               fps=10, episodes_per_file=3)  # fmt: skip
        if args.sigterm_trials:
            sigterm_trials(dataset, work, args.sigterm_trials, args.unguarded)
        if args.kill_trials:
            kill_trials(dataset, work, args.kill_trials)


if __name__ == "__main__":
    main()

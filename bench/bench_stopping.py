"""Stopping trials: does SIGTERM ever hang snakemake, does a run resume after kill -9?

    python bench/bench_stopping.py [--sigterm-trials 40] [--kill-trials 10] [--unguarded]
        [--hang-trials 4] [--group-kill-trials 4]

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
Hanging calls: starts `episcribe` with `vlm.fake.fault_rate=0.6` (every fourth fault
holds its request for 60 s) and the default `vlm.request_timeout_s`, sends SIGTERM
8 s or 15 s after the first model call (to `episcribe` alone, then to its group, in
turn), and measures the time to exit and the requests that arrived at the fake server
more than 0.5 s after the signal; then runs the command again without faults (a new
model identity, so everything is asked again: hanging calls would take minutes each)
and notes whether it finished.

kill -9 of `episcribe`'s group: once two staging files exist; counts the trials after
which no snakemake process is left in the directory within 20 s, and the next runs
that finish.
Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
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


def hang_trials(dataset: Path, work: Path, trials: int) -> None:
    from test_cli import fake_config
    from test_stop_promptly import requests, rerun
    from test_stopping import start_episcribe, wait_for

    exits, late_total, resumed = [], 0, 0
    for trial in range(trials):
        run_dir = work / f"hang{trial}"
        run_dir.mkdir(parents=True)
        after_s = (8.0, 15.0)[trial % 2]
        proc = start_episcribe(
            run_dir, *fake_config(dataset), "vlm.fake.fault_rate=0.6",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_for(lambda d=run_dir: requests(d))
        first = min(r["arrival"] for r in requests(run_dir))
        time.sleep(max(0.0, first + after_s - time.time()))
        signalled = time.time()
        to_group = trial // 2 % 2 == 1
        if to_group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
            took = f"{time.time() - signalled:.1f} s"
            exits.append(time.time() - signalled)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            took = "hung (> 120 s)"
        time.sleep(2)  # held requests are logged when the client hangs up
        late = [r for r in requests(run_dir) if r["arrival"] > signalled + 0.5]
        late_total += len(late)
        finished = rerun(dataset, run_dir).returncode == 0
        resumed += finished
        target = "group" if to_group else "episcribe"
        print(f"  trial {trial + 1}: SIGTERM to {target} at {after_s:g} s: exit {took}, "
              f"{len(late)} requests after it, next run {'finished' if finished else 'FAILED'}",
              flush=True)  # fmt: skip
    span = f"{min(exits):.1f}-{max(exits):.1f} s" if exits else "none"
    print(f"SIGTERM with calls hanging: {trials} tried, {len(exits)} exited ({span}), "
          f"{late_total} requests after a signal, {resumed} next runs finished")  # fmt: skip


def group_kill_trials(dataset: Path, work: Path, trials: int) -> None:
    from test_cli import fake_config
    from test_stop_promptly import rerun
    from test_stopping import staged, start_episcribe, wait_for

    from episcribe.command.stopping import snakemake_processes

    gone = resumed = 0
    for trial in range(trials):
        run_dir = work / f"groupkill{trial}"
        run_dir.mkdir(parents=True)
        proc = start_episcribe(
            run_dir, *fake_config(dataset), "workflow.episodes_per_job=1",
            "vlm.fake.latency_ms=200",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_for(lambda d=run_dir: staged(d) >= 2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while snakemake_processes(run_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = len(snakemake_processes(run_dir))
        gone += left == 0
        finished = rerun(dataset, run_dir).returncode == 0
        resumed += finished
        print(f"  trial {trial + 1}: {left} snakemake processes left, next run "
              f"{'finished' if finished else 'FAILED'}", flush=True)  # fmt: skip
    print(f"kill -9 of episcribe's group: {trials} tried, {gone} left no snakemake, "
          f"{resumed} next runs finished")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigterm-trials", type=int, default=40)
    parser.add_argument("--kill-trials", type=int, default=10)
    parser.add_argument("--unguarded", action="store_true")
    parser.add_argument("--hang-trials", type=int, default=4)
    parser.add_argument("--group-kill-trials", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = make_dataset(work / "data" / "synth", seed=5, episodes=6, seconds=2.0,
                               fps=10, episodes_per_file=3)  # fmt: skip
        if args.sigterm_trials:
            sigterm_trials(dataset, work, args.sigterm_trials, args.unguarded)
        if args.kill_trials:
            kill_trials(dataset, work, args.kill_trials)
        if args.hang_trials:
            hang_trials(dataset, work, args.hang_trials)
        if args.group_kill_trials:
            group_kill_trials(dataset, work, args.group_kill_trials)


if __name__ == "__main__":
    main()

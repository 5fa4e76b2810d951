"""Snakemake's own cost at 10,000 episodes: dry run, no-op re-run, job count.

    python bench/bench_scale.py [--episodes 10000] [--repeat 2] [--workdir DIR] [--keep]
        [--config KEY=VALUE ...]

Builds (once, outside the timing; reused from --workdir if present) a valid synthetic
LeRobot v3 dataset of 10,000 one-second episodes: 2 cameras, 64x48 H.264 at 5 fps,
500 episodes per data shard and per video file, so 20 data shards and 40 mp4 files.
`LeRobotDataset.open` accepts it like any other dataset. Then, in a throw-away copy of the
workflow (fake model backend; nothing is ever called):

1. `snakemake -n` (dry run): wall time, and the job count a full run would schedule
   (the "total" line of Snakemake's job table) with the rule count;
2. every output of the DAG is created, up to date (mtimes ordered: staging files, then
   the validation report, then the write manifest and report outputs; no
   .snakemake/metadata, as after `--touch` or a copy), with the cache's delivery record
   of every staging file as a real run leaves them, then a plain `snakemake` that must
   do nothing: wall time of that no-op re-run, and whether it really did nothing.

Every time is printed with the CPU seconds (user + sys) of the snakemake process: on a
shared 2-core machine the wall time varies with the load, the CPU time much less.
Targets (issue 6): dry run <= 30 s, no-op re-run <= 15 s. Each step runs --repeat times;
prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from smk import Workspace, _clean_env  # noqa: E402
from synth import make_dataset  # noqa: E402

from episcribe.config import resolve  # noqa: E402
from episcribe.pipeline.workflow import WorkflowPlan  # noqa: E402

TOTAL = re.compile(r"^total\s+(\d+)\s*$", re.MULTILINE)


def run(ws: Workspace, args, *extra: str) -> tuple[float, str, int, float, float]:
    """Wall time, output, return code, peak RSS (MB) and CPU seconds (user + sys, with
    its children) of one snakemake invocation. The CPU time is what to compare on a
    machine shared with other work; the wall time is what the issue's targets are."""
    command = ws.command(*extra)
    command[command.index("--cores") + 1] = str(args.cores)
    t0 = time.perf_counter()
    before = os.times()
    proc = subprocess.Popen(
        command,
        cwd=ws.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_clean_env(),
    )
    peak = 0
    ps = psutil.Process(proc.pid)
    out_chunks = []
    # Poll memory while reading output (communicate would block without sampling).
    import threading

    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [ps, *ps.children(True)]))
        except psutil.Error:
            pass
        time.sleep(0.2)
    reader.join()
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, "".join(out_chunks), proc.returncode, peak / 2**20, cpu


def create_outputs(ws: Workspace, dataset: Path, config: dict) -> int:
    """Create every output of the DAG, older to newer along the DAG's edges."""
    import yaml  # --config values are YAML, as snakemake reads them

    typed = {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in config.items()}
    cfg = resolve({**typed, "dataset__root": str(dataset)})
    cwd = os.getcwd()
    os.chdir(ws.root)
    try:
        plan = WorkflowPlan(cfg, Path("prompts"))
        base = plan.paths.results
        staging = [Path(p) for p in plan.all_staging()]
    finally:
        os.chdir(cwd)
    now = time.time()
    created = 0
    for rel in staging:
        path = ws.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        os.utime(path, (now, now))
        created += 1
    later = [
        (base / "validation" / "report.json", now + 1),
        (base / "validation" / "report.txt", now + 1),
        (base / "write" / "manifest.json", now + 2),
        (base / "report" / "summary.html", now + 2),
        (base / "report" / "usage.csv", now + 2),
    ]
    for rel, stamp in later:
        path = ws.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        os.utime(path, (stamp, stamp))
        created += 1
    for rel in (base / "report" / "timelines", base / "report" / "vqa"):
        path = ws.root / rel
        path.mkdir(parents=True, exist_ok=True)
        os.utime(path, (now + 2, now + 2))
        created += 1
    return created


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("--episodes", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per episode")
    parser.add_argument("--fps", type=int, default=5)
    parser.add_argument("--episodes-per-file", type=int, default=500)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--config",
        nargs="*",
        default=[],
        help="extra workflow config, e.g. workflow.episodes_per_job=50",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the dataset and workspace go (default: tmp)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the workspace")
    args = parser.parse_args()

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_scale_")
        args.workdir = Path(tmp.name)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    dataset = args.workdir / f"synth_{args.episodes}x{args.seconds:g}s"
    if not (dataset / "meta" / "info.json").exists():
        t = time.perf_counter()
        make_dataset(
            dataset,
            episodes=args.episodes,
            seconds=args.seconds,
            fps=args.fps,
            cameras=("observation.images.cam0", "observation.images.cam1"),
            episodes_per_file=args.episodes_per_file,
            size=(64, 48),
            seed=0,
        )
        print(f"dataset {dataset} built in {time.perf_counter() - t:.1f} s (not timed)")

    config = {}
    for item in args.config:
        key, _, value = item.partition("=")
        config[key.replace(".", "__")] = value
    ws_dir = args.workdir / f"ws_{time.time_ns()}"
    ws = Workspace(ws_dir, dataset, **config)
    print(
        f"{args.episodes} episodes x {args.seconds:g} s, 2 cameras 64x48 at {args.fps} fps; "
        f"--cores {args.cores}; load average "
        f"{' '.join(f'{x:.1f}' for x in psutil.getloadavg())}"
    )

    dry = []
    for _ in range(args.repeat):
        wall, out, rc, peak, cpu = run(ws, args, "-n")
        jobs = TOTAL.findall(out)
        dry.append(wall)
        print(
            f"dry run: {wall:.1f} s (target <= 30; {cpu:.1f} CPU-s), rc {rc}, "
            f"peak RSS {peak:.0f} MB; "
            f"a full run would schedule {jobs[-1] if jobs else '?'} jobs"
        )
        if rc != 0:
            print(out[-3000:])
            return

    t = time.perf_counter()
    created = create_outputs(ws, dataset, config)
    print(f"created {created} outputs in {time.perf_counter() - t:.1f} s (not timed)")
    # A dry run first: if anything is still out of date, say so rather than run it.
    wall, out, rc, _, cpu = run(ws, args, "-n")
    jobs = TOTAL.findall(out)
    if jobs:
        print(f"the outputs are not all up to date ({jobs[-1]} jobs); no-op run skipped")
        print(out[-3000:])
        return
    print(f"dry run with every output present: {wall:.1f} s ({cpu:.1f} CPU-s)")
    noop = []
    for _ in range(args.repeat):
        wall, out, rc, peak, cpu = run(ws, args)
        jobs = TOTAL.findall(out)
        did_nothing = "Nothing to be done" in out
        noop.append(wall)
        print(
            f"no-op re-run: {wall:.1f} s (target <= 15; {cpu:.1f} CPU-s), rc {rc}, "
            f"peak RSS {peak:.0f} MB; "
            + (
                "nothing was done"
                if did_nothing
                else f"it scheduled {jobs[-1] if jobs else '?'} jobs!"
            )
        )
        if not did_nothing:
            print(out[-3000:])
            break
    if len(dry) > 1:
        print(f"dry run {min(dry):.1f}-{max(dry):.1f} s; no-op {min(noop):.1f}-{max(noop):.1f} s")
    if tmp is not None and not args.keep:
        tmp.cleanup()


if __name__ == "__main__":
    main()

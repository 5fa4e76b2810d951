"""Preflight's data check at 10,000 episodes: how long before the first job may start.

    python bench/bench_preflight.py [--episodes 10000] [--repeat 3] [--workdir DIR]

Builds (once, untimed; reused from --workdir) the dataset of bench_scale.py: 10,000
one-second episodes, 2 cameras 64x48 at 5 fps, 500 episodes per data shard and video
file. Then times, --repeat times, in this process: opening the dataset (meta/ only) and
episcribe.lerobot.data_check.check_data over every episode (parquet footers, the episode_index
and timestamp columns), with the CPU seconds beside the wall time (the machine is
shared). Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from synth import make_dataset  # noqa: E402

from episcribe.lerobot.data_check import check_data  # noqa: E402
from episcribe.lerobot.dataset import LeRobotDataset  # noqa: E402


def timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn(*args)
    return value, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_preflight_")
        args.workdir = Path(tmp.name)
    dataset = args.workdir.resolve() / f"synth_{args.episodes}x1s"
    if not (dataset / "meta" / "info.json").exists():
        t = time.perf_counter()
        make_dataset(
            dataset, episodes=args.episodes, seconds=1.0, fps=5,
            cameras=("observation.images.cam0", "observation.images.cam1"),
            episodes_per_file=500, size=(64, 48), seed=0,
        )  # fmt: skip
        print(f"dataset {dataset} built in {time.perf_counter() - t:.1f} s (not timed)")
    load = " ".join(f"{x:.1f}" for x in psutil.getloadavg())
    print(f"{args.episodes} episodes, load average {load}")
    for _ in range(args.repeat):
        opened, open_wall, open_cpu = timed(LeRobotDataset.open, dataset)
        _, wall, cpu = timed(check_data, opened, opened.episode_indices())
        print(
            f"open: {open_wall:.2f} s ({open_cpu:.2f} CPU-s); "
            f"data check: {wall:.2f} s ({cpu:.2f} CPU-s)"
        )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

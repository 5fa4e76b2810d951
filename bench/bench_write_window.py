"""How long a reader of a dataset being written in place sees it mixed.

    python bench/bench_write_window.py [--shards 100] [--repeat 3]

Builds a synthetic dataset of --shards one-episode data shards (3 s at 10 fps, one
160x120 camera), stages the rows of two episodes, and writes in place with
episcribe.lerobot.writer.write_annotated, --repeat times on fresh copies. The window is the time
between the first data shard's replacement and meta/info.json's (each file's ctime,
which its rename sets): while it lasts, a reader sees some shards with the language
columns and some without, and an info.json that may not declare them. Run it with
PYTHONPATH pointing at another checkout's src/ to measure that one's writer. Prints
numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from synth import make_dataset  # noqa: E402
from test_writer import stage_all  # noqa: E402

import episcribe  # noqa: E402
from episcribe.lerobot.dataset import LeRobotDataset  # noqa: E402
from episcribe.lerobot.writer import write_annotated  # noqa: E402
from episcribe.pipeline.staging import MODULES, rows_from  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_write_window_") as tmp:
        source = make_dataset(
            Path(tmp) / "source", seed=3, episodes=args.shards, seconds=3.0, fps=10,
            episodes_per_file=1, cameras=("observation.images.top",), size=(160, 120),
        )  # fmt: skip
        load = " ".join(f"{x:.1f}" for x in psutil.getloadavg())
        print(f"{args.shards} shards, writer {episcribe.__file__}, load average {load}")
        for trial in range(args.repeat):
            root = Path(tmp) / f"copy{trial}"
            shutil.copytree(source, root)
            dataset = LeRobotDataset.open(root)
            staging = Path(tmp) / f"staging{trial}"
            stage_all(dataset, staging, [0, 1])
            started = time.perf_counter()
            write_annotated(dataset, rows_from(staging, MODULES), [0, 1], MODULES, None)
            total = time.perf_counter() - started
            shards = [p.stat().st_ctime_ns for p in (root / "data").rglob("file-*.parquet")]
            info = (root / "meta" / "info.json").stat().st_ctime_ns
            window = (max(info, *shards) - min(shards)) / 1e6
            print(f"write {total:.2f} s; mixed for {window:.1f} ms")


if __name__ == "__main__":
    main()

"""The synthetic dataset of the issue-6 scenario, built once per work directory.

Shared by bench_workflow.py and bench_report.py: the name encodes every option, so a
dataset found under it was built with the same ones and is reused (building 32 x 20 s x
2 cameras takes ~35 s, which no benchmark should time).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# The synthetic dataset factory lives with the tests (it ships in no package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synth import make_dataset  # noqa: E402


def add_scenario_arguments(parser: argparse.ArgumentParser) -> None:
    """The scenario's options, defaults the issue-6 scenario."""
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per episode")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", default="320x240", help="frame size WxH")
    parser.add_argument("--cameras", type=int, default=2)


def scenario_from_args(workdir: Path, args: argparse.Namespace) -> Path:
    """``scenario_dataset`` with the options of :func:`add_scenario_arguments`."""
    return scenario_dataset(
        workdir,
        episodes=args.episodes,
        seconds=args.seconds,
        fps=args.fps,
        size=args.size,
        cameras=args.cameras,
    )


def scenario_dataset(
    workdir: Path, *, episodes: int, seconds: float, fps: int, size: str, cameras: int
) -> Path:
    """``workdir/synth_<episodes>x<seconds>s_<size>_<fps>fps_<cameras>cam``, built if absent."""
    width, height = (int(v) for v in size.lower().split("x"))
    dataset = Path(workdir) / f"synth_{episodes}x{seconds:g}s_{size}_{fps}fps_{cameras}cam"
    if not (dataset / "meta" / "info.json").exists():
        started = time.perf_counter()
        make_dataset(
            dataset,
            episodes=episodes,
            seconds=seconds,
            fps=fps,
            cameras=tuple(f"observation.images.cam{i}" for i in range(cameras)),
            size=(width, height),
            seed=0,
        )
        print(f"dataset {dataset.name} built in {time.perf_counter() - started:.1f} s (not timed)")
    return dataset

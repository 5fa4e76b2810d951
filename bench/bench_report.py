"""Measure the report for a 100-episode dataset: render time, report build time, size.

    python bench/bench_report.py [--episodes 100] [--seconds 3] [--cores 8] [--keep DIR]

Builds a synthetic dataset (short episodes, two 160x120 H.264 cameras), runs the whole
workflow with the fake model server in a throw-away workspace, then
`snakemake --report report.html`, and prints:
- the render_report rule's own time (its benchmark TSV) and the rendered files' total sizes;
- the wall time of `snakemake --report` and the size of report.html.
Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from smk import Workspace  # noqa: E402

from episcribe.synth import make_dataset  # noqa: E402


def size_of(paths) -> tuple[int, int]:
    files = [p for p in paths if p.suffix in (".png", ".jpg")]
    return len(files), sum(p.stat().st_size for p in files)


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="work here instead of a temporary dir")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        data = make_dataset(
            base / "synth", episodes=args.episodes, seconds=args.seconds, episodes_per_file=10
        )
        print(
            f"dataset: {args.episodes} episodes x {args.seconds:g} s, {time.monotonic() - t0:.1f} s"
        )

        ws = Workspace(base / "ws", data)
        t0 = time.monotonic()
        ws.run("--cores", str(args.cores), timeout=3600)
        print(f"workflow (fake server, {args.cores} cores): {time.monotonic() - t0:.1f} s")

        out = ws.root / "results" / "synth" / "report"
        bench = ws.root / "benchmarks" / "synth" / "render_report" / "render_report.tsv"
        with open(bench) as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        n_tl, tl = size_of((out / "timelines").iterdir())
        n_ov, ov = size_of((out / "vqa").iterdir())
        print(f"render_report rule: {float(row['s']):.1f} s, max RSS {row['max_rss']} MB")
        print(f"  timelines: {n_tl} files, {mb(tl)} ({tl / max(n_tl, 1) / 1e3:.0f} KB each)")
        print(f"  overlays:  {n_ov} files, {mb(ov)} ({ov / max(n_ov, 1) / 1e3:.0f} KB each)")

        t0 = time.monotonic()
        ws.run("--report", "report.html", timeout=3600)
        seconds = time.monotonic() - t0
        size = (ws.root / "report.html").stat().st_size
        print(f"snakemake --report: {seconds:.1f} s, report.html {mb(size)}")


if __name__ == "__main__":
    main()

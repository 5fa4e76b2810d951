"""Measure the report: its two jobs, build_report in-process, the HTML report.

    python bench/bench_report.py [--episodes 32] [--seconds 20] [--cameras 2] [--fps 30]
        [--size 320x240] [--cores 2] [--repeat 3] [--no-html] [--workdir DIR]

The defaults are the issue-6 scenario (32 episodes x 20 s x 2 cameras, 320x240 H.264 at
30 fps, as bench_workflow.py builds it). Builds the dataset (not timed; kept in
--workdir), runs the workflow once with a zero-latency fake model server
(workflow.episodes_per_job=16) in a throw-away workspace, then prints:
- the render_report (images) and summarize_run (summary, usage) jobs as snakemake's
  benchmark TSVs record them (wall s, cpu_time: Python start-up and imports included),
  for the first run and for --repeat forced re-runs of those two jobs alone
  (`--forcerun render_report summarize_run`);
- build_report called in this process, --repeat times: wall and CPU time
  (time.process_time; imports excluded), and what it drew;
- the rendered files' sizes, and (unless --no-html) the wall time of
  `snakemake --report` and the size of report.html.
The machine is shared: the load average is printed beside each number. Asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from scenario import scenario_from_args  # noqa: E402
from smk import Workspace  # noqa: E402

from episcribe.report.build import build_report  # noqa: E402

MODULES = ["plan", "interjections", "plan_update", "vqa"]


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def size_of(directory: Path) -> tuple[int, int]:
    files = [p for p in directory.iterdir() if p.suffix in (".png", ".jpg")]
    return len(files), sum(p.stat().st_size for p in files)


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


JOBS = ("render_report", "summarize_run")


def job_row(ws: Workspace, dataset: str, rule: str) -> dict:
    tsv = ws.root / "benchmarks" / dataset / rule / f"{rule}.tsv"
    with open(tsv) as fh:
        return next(csv.DictReader(fh, delimiter="\t"))


def job_line(ws: Workspace, dataset: str) -> str:
    rows = {rule: job_row(ws, dataset, rule) for rule in JOBS}
    return "; ".join(
        f"{rule} {float(r['s']):.2f} s wall, {float(r['cpu_time']):.2f} CPU-s, "
        f"max RSS {r['max_rss']} MB"
        for rule, r in rows.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-html", action="store_true", help="skip snakemake --report")
    parser.add_argument("--workdir", type=Path, help="keep the dataset and workspace here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = args.workdir or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        data = scenario_from_args(base, args)

        ws_root = base / f"ws_report_{time.time_ns()}"
        ws = Workspace(ws_root, data, vlm__fake__latency_ms=0)
        t0 = time.monotonic()
        ws.run("--cores", str(args.cores), timeout=3600)
        print(
            f"workflow (zero-latency fake server, --cores {args.cores}): "
            f"{time.monotonic() - t0:.1f} s"
        )
        print(f"report jobs, in the run: {job_line(ws, data.name)} (load {load()})")
        for k in range(args.repeat):
            ws.run("--cores", str(args.cores), "--forcerun", *JOBS, timeout=3600)
            print(f"report jobs, forced re-run {k + 1}: {job_line(ws, data.name)} (load {load()})")

        results = ws.root / "results" / data.name
        episodes = json.loads((results / "validation" / "report.json").read_text())["episodes"]
        out = base / f"out_{time.time_ns()}"
        for k in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)
            wall, cpu = time.perf_counter(), time.process_time()
            drawn = build_report(
                dataset_root=data,
                staging_dir=results / "staging",
                episodes=episodes,
                modules=MODULES,
                model={"model_id": "fake", "camera_key": None},
                metrics_paths=sorted((results / "jobs").glob("annotate_*/*.metrics.jsonl")),
                validation_json=results / "validation" / "report.json",
                timelines_dir=out / "timelines",
                overlays_dir=out / "vqa",
                summary_path=out / "summary.html",
                usage_path=out / "usage.csv",
                dataset_name=data.name,
            )
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"build_report in-process {k + 1}: {wall:.2f} s wall, {cpu:.2f} CPU-s; "
                f"{drawn['timelines']} timelines, {drawn['overlays']} overlay sheets, "
                f"{drawn['keyframes']} frames grabbed (load {load()})"
            )
        n_tl, tl = size_of(out / "timelines")
        n_ov, ov = size_of(out / "vqa")
        print(f"  timelines: {n_tl} files, {mb(tl)} ({tl / max(n_tl, 1) / 1e3:.0f} KB each)")
        print(f"  overlays:  {n_ov} files, {mb(ov)} ({ov / max(n_ov, 1) / 1e3:.0f} KB each)")
        if not args.workdir:
            shutil.rmtree(out, ignore_errors=True)

        if not args.no_html:
            t0 = time.monotonic()
            ws.run("--report", "report.html", timeout=3600)
            seconds = time.monotonic() - t0
            size = (ws.root / "report.html").stat().st_size
            print(f"snakemake --report: {seconds:.1f} s, report.html {mb(size)}")


if __name__ == "__main__":
    main()

"""Prompt tokens per episode, and how many of them a prefix-caching server must compute.

    python bench/bench_tokens.py [--episodes 32] [--seconds 20] [--fps 30] [--size 320x240]
        [--cameras 2] [--model Qwen/Qwen3.6-27B] [--workdir DIR] [--config KEY=VALUE ...]

Runs the issue-6 scenario (32 episodes x 20 s x 2 cameras, 320x240 H.264 at 30 fps;
dataset built once, see scenario.py) through the real workflow with the fake server at
zero latency, which counts every request's prompt tokens with the Qwen-VL image rule and
how many of them repeat a prefix (whole texts and images, in order) of an earlier request:
what vLLM's automatic prefix caching would not recompute. Prints, per episode (the run's
totals over the episode count): requests, prompt tokens, image tokens, uncached prompt
tokens, and completion tokens; then the same per call kind; and the requests refused or
cut at their budget. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from scenario import add_scenario_arguments, scenario_from_args  # noqa: E402
from smk import Workspace, _clean_env  # noqa: E402

FIELDS = ("requests", "prompt", "image", "uncached", "completion")


def tally(calls: list[dict]) -> dict[str, dict[str, int]]:
    """Sums of each field per call kind (and ``all``) over the answered requests."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))
    for c in calls:
        if c.get("status") != 200:
            continue
        for kind in (c.get("kind") or "?", "all"):
            row = out[kind]
            row["requests"] += 1
            row["prompt"] += c["prompt_tokens"]
            row["image"] += c["image_tokens"]
            row["uncached"] += c["prompt_tokens"] - c["cached_tokens"]
            row["completion"] += c["completion_tokens"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    add_scenario_arguments(parser)
    parser.add_argument("--model", default="Qwen/Qwen3.6-27B")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--config", nargs="*", default=[], help="extra config, KEY=VALUE")
    args = parser.parse_args()

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_tokens_")
        args.workdir = Path(tmp.name)
    workdir = args.workdir.resolve()
    dataset = scenario_from_args(workdir, args)
    config = {"vlm__model_id": args.model}
    for item in args.config:
        key, _, value = item.partition("=")
        config[key.replace(".", "__")] = value
    run_dir = workdir / f"run_{time.time_ns()}"  # a fresh workspace: no cache, no staging
    ws = Workspace(run_dir, dataset, **config)
    proc = subprocess.run(
        ws.command(), cwd=run_dir, capture_output=True, text=True, env=_clean_env()
    )
    if proc.returncode != 0:
        print((proc.stdout + proc.stderr)[-3000:], file=sys.stderr)
        sys.exit(f"snakemake failed ({proc.returncode})")
    calls = ws.fake_requests()
    n = args.episodes
    print(
        f"{n} episodes x {args.seconds:g} s x {args.cameras} cameras, {args.size}; model "
        f"{args.model}; {len(calls)} requests"
    )
    sums = tally(calls)
    print(f"{'per episode':<18}" + "".join(f"{f:>12}" for f in FIELDS))
    for kind in sorted(sums, key=lambda k: (k == "all", k)):
        row = sums[kind]
        print(f"{kind:<18}" + "".join(f"{row[f] / n:>12.1f}" for f in FIELDS))
    refused = [c for c in calls if c.get("status") not in (200, 0)]
    cut = [c for c in calls if c.get("finish_reason") == "length"]
    print(f"refused requests: {len(refused)}; answers cut at their budget: {len(cut)}")
    shutil.rmtree(run_dir, ignore_errors=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

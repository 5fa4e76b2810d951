"""The annotations measured: a WGO-format fixture through import-wgo, the workflow and eval.

Three runs of the default configuration against the fake server, each scored with
``episcribe eval`` (exact-match judge):

- the oracle without noise: what the workflow itself loses of a perfect answer (windows,
  stitching, the shortest-subtask and step caps);
- the oracle with noise (``--jitter``, ``--merge``, ``--swap``): the scores that noise
  implies;
- the ordinary fake (random subtasks): the floor, and the run's model calls and tokens per
  hour of video (prompt tokens are counted by the Qwen-VL rule, so they are the real
  pipeline's; completion tokens are the fake's).

    python bench/bench_eval.py --workdir bench/out/eval [--episodes 12]

The fixture is synthetic (``tests/wgo_fixture.py``): episodes of 8-45 s at 10 fps and
``--size`` (640x480), gold of 2-8 gap-free subtasks of at least 1.5 s on a 0.1-s grid, no
two neighbours alike, drawn from ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from smk import Workspace  # noqa: E402
from wgo_fixture import Row, write_wgo  # noqa: E402

from episcribe.eval.wgo import import_wgo  # noqa: E402

VERBS = ("pick up", "put down", "open", "close", "wipe", "push", "lift", "rotate")
OBJECTS = ("cup", "drawer", "sponge", "lid", "towel", "block", "bottle", "bowl")
FAMILIES = ("droid", "galaxea", "homer")


def fixture_rows(episodes: int, seed: int, size: tuple[int, int]) -> list[Row]:
    rng = random.Random(seed)
    rows = []
    for e in range(episodes):
        tenths = rng.randint(80, 450)  # 8-45 s
        n = rng.randint(2, min(8, tenths // 15))
        cuts = sorted(rng.sample(range(15, tenths - 14), n - 1)) if n > 1 else []
        # Keep every subtask >= 1.5 s: drop cuts too close to the previous one.
        kept: list[int] = []
        for c in cuts:
            if c - (kept[-1] if kept else 0) >= 15 and tenths - c >= 15:
                kept.append(c)
        bounds = [0, *kept, tenths]
        labels: list[str] = []
        while len(labels) < len(bounds) - 1:
            label = f"{rng.choice(VERBS)} the {rng.choice(OBJECTS)}"
            if not labels or label != labels[-1]:  # a repeat would be one continuing step
                labels.append(label)
        segs = [(bounds[k] / 10, bounds[k + 1] / 10, labels[k]) for k in range(len(labels))]
        rows.append(
            Row(
                f"bench_{e:03d}",
                tenths / 10,
                segs,
                instruction=f"Tidy up the {rng.choice(OBJECTS)} and the {rng.choice(OBJECTS)}",
                family=FAMILIES[e % len(FAMILIES)],
                size=size,
            )
        )
    return rows


def run_eval(gold: Path, results: Path, label: str) -> dict:
    out = results.parent / f"{results.name}.eval.json"
    proc = subprocess.run(
        [sys.executable, "-m", "episcribe.command.cli", "eval", "--gold", str(gold),
         "--pred", str(results), "--json", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    print(f"\n== {label}")
    print(proc.stdout.strip())
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--episodes", type=int, default=12)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--size", default="640x480", help="video WxH (image tokens follow it)")
    p.add_argument("--jitter", type=float, default=0.3)
    p.add_argument("--merge", type=float, default=0.15)
    p.add_argument("--swap", type=float, default=0.2)
    args = p.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_eval_"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    started = time.perf_counter()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    rows = fixture_rows(args.episodes, args.seed, size)
    imported = import_wgo([write_wgo(work / "wgo.parquet", rows)], work / "import")
    seconds = sum(r.seconds for r in rows)
    print(
        f"fixture: {imported.episodes} episodes, {seconds:.1f} s of video, "
        f"{sum(len(r.segments) for r in rows)} gold subtasks "
        f"(built and imported in {time.perf_counter() - started:.1f} s)"
    )
    runs = {
        "oracle, no noise": {"vlm__fake__oracle": imported.gold},
        f"oracle, jitter {args.jitter} s, merge {args.merge}, swap {args.swap}": {
            "vlm__fake__oracle": imported.gold,
            "vlm__fake__oracle_jitter_s": args.jitter,
            "vlm__fake__oracle_merge_rate": args.merge,
            "vlm__fake__oracle_swap_rate": args.swap,
        },
        "ordinary fake (random subtasks)": {},
    }
    for k, (label, config) in enumerate(runs.items()):
        ws = Workspace(work / f"run{k}", imported.dataset, **config)
        t0 = time.perf_counter()
        ws.run(timeout=3600)
        print(f"\n(run {k}: {time.perf_counter() - t0:.1f} s wall)")
        report = run_eval(imported.gold, ws.root / "results" / imported.dataset.name, label)
        cost = report["predictions"][0]["cost"]
    print("\n== cost of the default configuration per hour of video (ordinary fake run)")
    for module, totals in cost["modules"].items():
        rate = {k: v / cost["video_hours"] for k, v in totals.items()}
        print(
            f"  {module:<14} {rate['calls']:>8.0f} calls {rate['uncached_prompt_tokens']:>12.0f} "
            f"uncached prompt tokens {rate['completion_tokens']:>10.0f} completion tokens"
        )
    rate = cost["per_video_hour"]
    print(
        f"  {'all':<14} {rate['calls']:>8.0f} calls {rate['uncached_prompt_tokens']:>12.0f} "
        f"uncached prompt tokens {rate['completion_tokens']:>10.0f} completion tokens"
    )


if __name__ == "__main__":
    main()

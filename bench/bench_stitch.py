"""What each step after the model does to a segmentation: segmentation F1 by step and noise.

    python bench/bench_stitch.py [--episodes 200] [--seed 0]

No model and no video: synthetic gold segmentations (30 fps frame times; 20-120 s
episodes; subtask lengths log-normal around 3 s, so about a third last under 2 s, as in
WGO-Bench's HomER gold) are given as the model's answer, exactly or with noise (boundary
jitter; neighbours merged), then passed through the plan module's own steps: the answer as
given; ``windows.reconcile`` over two windows overlapping by one 10-s sheet that each saw
the answer with their own jitter; ``stitching.stitch`` with the new defaults (no cap,
0.5 s minimum) and with the old ones (at most 8, 1 s minimum); ``grounding.snap_boundaries``
with a keystate on every gold boundary (a robot whose gripper events mark every boundary:
the most snapping can help). Scored with segmentation F1 as issue 23 states it (outer
edges set to gold's, one-to-one greedy matching by temporal IoU >= 0.75, pooled over
episodes). Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from episcribe.modules.base import frame_time  # noqa: E402
from episcribe.modules.plan.grounding import TimedKeystate, snap_boundaries  # noqa: E402
from episcribe.modules.plan.stitching import stitch  # noqa: E402
from episcribe.modules.plan.windows import reconcile  # noqa: E402
from episcribe.modules.signals.analysis import Keystate  # noqa: E402

FPS = 30
SHEET_SECONDS = 10.0


def gold_episode(rng: random.Random) -> tuple[np.ndarray, list[tuple[float, float]]]:
    seconds = rng.uniform(20, 120)
    ts = (np.arange(int(seconds * FPS), dtype=np.float32) / np.float32(FPS)).astype(np.float32)
    cuts, t = [0.0], 0.0
    while True:
        t += max(0.5, rng.lognormvariate(np.log(3.0), 0.6))
        if t >= float(ts[-1]) - 0.5:
            break
        cuts.append(frame_time(ts, int(round(t * FPS))))
    cuts.append(float(ts[-1]))
    return ts, list(zip(cuts[:-1], cuts[1:], strict=True))


def noisy(segments, rng: random.Random, jitter: float, merge: float):
    """Boundaries moved by N(0, jitter) s (kept in order); each merged away with p=merge."""
    starts = [a for a, _ in segments][1:]
    starts = [s + rng.gauss(0, jitter) if jitter else s for s in starts if rng.random() >= merge]
    lo, hi = segments[0][0], segments[-1][1]
    edges = [lo, *sorted(min(max(s, lo), hi) for s in starts), hi]
    return [(f"step {k}", a, b) for k, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True))]


def covers(starts: list[float], end: float) -> list[tuple[float, float]]:
    return list(zip(starts, [*starts[1:], end], strict=True))


def f1_counts(pred, gold) -> tuple[int, int, int]:
    """(matched, predicted, gold) of one episode, greedy by IoU >= 0.75, outer edges set."""
    pred = [(a, b) for a, b in pred if b > a]
    if pred:
        pred[0] = (gold[0][0], pred[0][1])
        pred[-1] = (pred[-1][0], gold[-1][1])
    pairs = []
    for i, (a, b) in enumerate(pred):
        for j, (c, d) in enumerate(gold):
            inter = max(0.0, min(b, d) - max(a, c))
            union = max(b, d) - min(a, c)
            if union > 0 and inter / union >= 0.75 - 1e-9:
                pairs.append((-inter / union, j, i))
    used_p, used_g, matched = set(), set(), 0
    for _, j, i in sorted(pairs):
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            matched += 1
    return matched, len(pred), len(gold)


def steps(ts, gold, answer, rng, jitter, merge):
    """The segments after each step, by step name."""
    end = float(ts[-1])
    out = {"answer": [(a, b) for _, a, b in answer]}
    new = stitch(answer, ts, 0, 0.5)
    out["stitch (new defaults)"] = covers([frame_time(ts, i) for i, _ in new], end)
    old = stitch(answer, ts, 8, 1.0)
    out["stitch (old: <= 8, >= 1 s)"] = covers([frame_time(ts, i) for i, _ in old], end)
    keystates = [TimedKeystate(a, Keystate(int(round(a * FPS)), "grasp", "", "")) for a, _ in gold]
    snapped, _ = snap_boundaries(new, ts, keystates[1:], 0.5)
    out["+ keystate snap"] = covers([frame_time(ts, i) for i, _ in snapped], end)
    # Two windows overlapping by one sheet, each with its own noisy view of the episode.
    mid = end / 2
    times = [float(t) for t in ts[:: FPS // 2]]
    windows = [
        [t for t in times if t <= mid + SHEET_SECONDS / 2],
        [t for t in times if t >= mid - SHEET_SECONDS / 2],
    ]
    views = []
    for w in windows:
        view = noisy(gold, rng, jitter, merge)
        views.append(
            [(x, max(a, w[0]), min(b, w[-1])) for x, a, b in view if b > w[0] and a < w[-1]]
        )
    windowed = stitch(reconcile(windows, views, 0.5), ts, 0, 0.5)
    out["2 windows + stitch"] = covers([frame_time(ts, i) for i, _ in windowed], end)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    episodes = [gold_episode(rng) for _ in range(args.episodes)]
    n_gold = sum(len(g) for _, g in episodes)
    short = sum(b - a < 2 for _, g in episodes for a, b in g)
    print(f"{args.episodes} episodes, {n_gold} gold subtasks ({short / n_gold:.0%} under 2 s)")
    for jitter, merge in ((0, 0), (0.25, 0), (0.5, 0), (1.0, 0), (0, 0.2), (0.5, 0.2)):
        totals: dict[str, list[int]] = {}
        for ts, gold in episodes:
            answer = noisy(gold, rng, jitter, merge)
            for name, pred in steps(ts, gold, answer, rng, jitter, merge).items():
                m, p, g = f1_counts(pred, gold)
                row = totals.setdefault(name, [0, 0, 0])
                row[0], row[1], row[2] = row[0] + m, row[1] + p, row[2] + g
        cells = []
        for name, (m, p, g) in totals.items():
            f1 = 2 * m / (p + g) if p + g else 0.0
            cells.append(f"{name} {f1:.3f}")
        print(f"jitter {jitter:g} s, merged {merge:.0%}: " + "; ".join(cells))


if __name__ == "__main__":
    main()

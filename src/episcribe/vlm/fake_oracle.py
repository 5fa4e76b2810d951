"""The fake server's oracle mode: segment (and label_segment) calls answered from a truth file.

With ``--oracle truth.jsonl`` (``vlm.fake.oracle``; the ``gold.jsonl`` that ``episcribe
import-wgo`` writes) a segment call gets the gold subtasks of its episode inside its
window, optionally noised, so a run's score is known before it starts: the whole chain
import -> annotate -> eval is tested against answers with a known score. A
``label_segment`` call (``episcribe eval --label-gold``) gets the noised label of the
truth segment that overlaps the span it names (``This step runs from ... s to ... s``) most.

Which episode a request is about is read from the request itself, as a model would: the
window's frame timestamps (``Frame timestamps (s): ...``), the episode's end when the
episode is split into windows (``the whole episode runs from ... to ... s``; else the
window's last frame is the episode's), and the task (``Task of the episode: ...``). The
episode is the truth line whose duration is closest to that end, a matching task
breaking ties. A request nothing matches gets the ordinary fake answer.

Noise, drawn per episode from ``seed`` (so every window of an episode sees the same
noised truth, whatever order requests come in):

- ``merge_rate``: each inner boundary is dropped with this probability (its neighbours
  become one subtask, "A, then b");
- ``jitter_s``: each remaining inner boundary moves by up to this many seconds (uniform),
  kept between its neighbours;
- ``swap_rate``: each subtask takes, with this probability, the next subtask's label
  (the last one the first's), so the boundaries stay right and the label is wrong.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

WHOLE_RE = re.compile(r"the whole episode runs from (-?[\d.]+) s to (-?[\d.]+) s")
TASK_RE = re.compile(r"^Task of the episode:\s*(.+)$", re.MULTILINE)
SPAN_RE = re.compile(r"This step runs from (-?[\d.]+) s to (-?[\d.]+) s")


@dataclass(frozen=True)
class Noise:
    jitter_s: float = 0.0
    merge_rate: float = 0.0
    swap_rate: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class TruthEpisode:
    episode: int
    duration: float
    task: str
    segments: tuple[tuple[float, float, str], ...]


def read_truth(path: str | Path) -> list[TruthEpisode]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        segs = tuple(
            sorted(
                (float(s["start_sec"]), float(s["end_sec"]), str(s.get("label", "")))
                for s in item["segments"]
            )
        )
        duration = float(item.get("duration_sec") or (segs[-1][1] if segs else 0.0))
        out.append(TruthEpisode(int(item["episode"]), duration, item.get("task") or "", segs))
    return out


def noised(truth: TruthEpisode, noise: Noise) -> list[tuple[float, float, str]]:
    """The episode's segments after the noise (deterministic for (seed, episode))."""
    rng = random.Random(f"{noise.seed}:{truth.episode}")
    segs = [list(s) for s in truth.segments]
    if not segs:
        return []
    merged = [segs[0]]
    for seg in segs[1:]:
        if rng.random() < noise.merge_rate:
            head = merged[-1]
            head[1] = seg[1]
            head[2] = f"{head[2].rstrip(' .')}, then {seg[2][:1].lower()}{seg[2][1:]}"
        else:
            merged.append(seg)
    for k in range(1, len(merged)):
        if noise.jitter_s > 0:
            lo, hi = merged[k - 1][0], merged[k][1]
            moved = merged[k][0] + rng.uniform(-noise.jitter_s, noise.jitter_s)
            moved = round(min(max(moved, lo + 0.001), hi - 0.001), 3)
            merged[k - 1][1] = merged[k][0] = moved
    labels = [s[2] for s in merged]
    for k, seg in enumerate(merged):
        if len(merged) > 1 and rng.random() < noise.swap_rate:
            seg[2] = labels[(k + 1) % len(merged)]
    return [(a, b, label) for a, b, label in merged]


class Oracle:
    def __init__(self, path: str | Path, noise: Noise):
        self.truth = read_truth(path)
        self.noise = noise

    def find(self, text: str, times: list[float]) -> TruthEpisode | None:
        """The truth episode a request's text is about (None: nothing close)."""
        whole = WHOLE_RE.search(text)
        end = float(whole.group(2)) if whole else max(times)
        task = TASK_RE.search(text)
        told = " ".join(task.group(1).split()).lower() if task else ""

        def distance(t: TruthEpisode) -> tuple[float, bool]:
            return abs(t.duration - end), " ".join(t.task.split()).lower() != told

        best = min(self.truth, key=distance, default=None)
        # The last frame is one frame period before the duration; a second is far more.
        return best if best is not None and distance(best)[0] <= 1.0 else None

    def segment(self, text: str, times: list[float], max_items: int) -> dict | None:
        """The segment answer for the window ``times`` covers, or None."""
        truth = self.find(text, times)
        if truth is None:
            return None
        lo, hi = min(times), max(times)
        inside = []
        for start, end, label in noised(truth, self.noise):
            # The episode's last frame stands for its end: the truth ends at the duration.
            end = hi if end >= truth.duration - 1e-6 else end
            a, b = max(start, lo), min(end, hi)
            if b > a or (a == b == lo == hi):
                inside.append([round(a, 3), round(b, 3), label])
        if not inside:
            return None
        while len(inside) > max(1, max_items):  # the schema's cap: the shortest joins one
            k = min(range(len(inside)), key=lambda j: inside[j][1] - inside[j][0])
            other = k - 1 if k == len(inside) - 1 else k + 1
            a, b = sorted((k, other))
            inside[a] = [inside[a][0], inside[b][1], f"{inside[a][2]}, then {inside[b][2]}"]
            del inside[b]
        return {
            "subtasks": [{"instruction": label, "start": a, "end": b} for a, b, label in inside]
        }

    def label(self, text: str, times: list[float]) -> dict | None:
        """The label_segment answer: the noised label of the span the request names."""
        span = SPAN_RE.search(text)
        truth = self.find(text, times) if span else None
        if truth is None:
            return None
        lo, hi = float(span.group(1)), float(span.group(2))
        segments = noised(truth, self.noise)
        best = max(segments, key=lambda s: min(s[1], hi) - max(s[0], lo), default=None)
        return {"instruction": best[2]} if best else None

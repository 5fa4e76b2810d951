"""Which frames the segment call sees: the whole episode in one request when it fits,
else overlapping windows whose answers are reconciled in the overlap.

WGO-Bench measured that splitting an episode into windows hurts: about 22 % of gold
boundaries fell on sheet or window edges. So an episode whose samples fit
``plan.max_video_frames`` (the per-request limit the serve command is sized by) is one
window. A longer one is split into windows of at most that many frames, each starting one
sheet before the previous one ends; in the overlap, each window's boundaries count only on
its side of the overlap's middle, so a boundary there is taken from the window that sees it
farther from its edge, once, and a window's own first and last times are never boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from episcribe.modules.base import frame_time, sample_times

Span = tuple[str, float, float]  # (instruction, start, end), seconds of the episode


def sampled_times(timestamps: np.ndarray, fps: float) -> list[float]:
    """Real frame times at ``fps`` from the first frame; the last frame always included."""
    first, last = frame_time(timestamps, 0), frame_time(timestamps, len(timestamps) - 1)
    times = sample_times(timestamps, first, last, fps)
    if times[-1] != last:
        times.append(last)
    return times


def plan_windows(
    timestamps: np.ndarray, fps: float, max_frames: int, window_seconds: float, overlap: int
) -> list[list[float]]:
    """Sampled real frame times, grouped into the windows of one segment request each.

    ``overlap``: frames a window shares with the next (one sheet). Fixed
    ``window_seconds`` windows are each extended by ``overlap`` frames into the next; a
    window over ``max_frames`` is thinned evenly (first and last kept).
    """
    times = sampled_times(timestamps, fps)
    if window_seconds and window_seconds > 0:
        first = times[0]
        groups: dict[int, list[int]] = {}
        for i, t in enumerate(times):
            groups.setdefault(int((t - first) // window_seconds), []).append(i)
        starts = [groups[k][0] for k in sorted(groups)]
        ends = [*(s + overlap for s in starts[1:]), len(times)]
        windows = [times[s:e] for s, e in zip(starts, ends, strict=True)]
    elif len(times) <= max_frames:
        windows = [times]
    else:
        overlap = min(overlap, max_frames // 2)
        step = max(1, max_frames - overlap)
        n = math.ceil((len(times) - overlap) / step)
        # Equal windows: spread the frames so no window is a short remainder.
        size = math.ceil((len(times) - overlap) / n) + overlap
        windows = []
        for k in range(n):
            start = min(k * (size - overlap), len(times) - size)
            windows.append(times[start : start + size])
    return [thin(w, max_frames) for w in windows if w]


def thin(times: list[float], cap: int) -> list[float]:
    """At most ``cap`` of ``times``, evenly spread, first and last kept."""
    if len(times) <= cap:
        return times
    if cap == 1:
        return [times[0]]
    picks = np.unique(np.round(np.linspace(0, len(times) - 1, cap)).astype(int))
    return [times[i] for i in picks]


def reconcile(
    windows: Sequence[Sequence[float]], spans: Sequence[Sequence[Span]], period: float
) -> list[Span]:
    """One list of spans from overlapping windows' answers (``spans[k]`` of ``windows[k]``).

    Window k keeps the spans that start in its own part: from the middle of its overlap
    with window k-1 (the first window: from anywhere) to the middle of its overlap with
    window k+1. The span running across a middle is the earlier window's, extended until
    the later window's first kept start. Two starts less than ``period`` apart across a
    middle are one boundary seen twice: the one farther from its window's edge stays.
    """
    if len(windows) == 1:
        return list(spans[0])
    cuts = [_middle(windows[k], windows[k + 1]) for k in range(len(windows) - 1)]
    bounds = [-math.inf, *cuts, math.inf]
    kept: list[list[Span]] = []
    for k, window_spans in enumerate(spans):
        lo, hi = bounds[k], bounds[k + 1]
        kept.append(sorted((s for s in window_spans if lo <= s[1] < hi), key=lambda s: s[1]))
    for k in range(1, len(kept)):
        before, after = kept[k - 1], kept[k]
        if before and after and after[0][1] - before[-1][1] < period - 1e-9:
            edge_before = windows[k - 1][-1] - before[-1][1]
            edge_after = after[0][1] - windows[k][0]
            if edge_before >= edge_after:
                after.pop(0)
            else:
                before.pop()
    return [span for own in kept for span in own]


def _middle(a: Sequence[float], b: Sequence[float]) -> float:
    """The middle of the overlap of two consecutive windows (their shared edge without)."""
    return (b[0] + a[-1]) / 2

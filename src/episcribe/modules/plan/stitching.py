"""The model's spans made into the gap-free cover LeRobot's ``subtask`` style needs.

A ``subtask`` row holds from its timestamp until the next one, so only starts survive.
:func:`stitch` keeps every start the model gave, on the nearest real frame, and fills gaps
by extending the subtask before a gap up to the next start (the first one back to the
first frame); it merges nothing unless told to by ``plan.plan_max_steps`` or
``plan.min_subtask_seconds``. So a segmentation whose starts are real frames comes out
unchanged. What can move a boundary: snapping to the nearest frame (at most half a frame
period), two starts on one frame (the later one dropped), the explicit cap and the minimum
length (the shortest subtask merged into its shorter neighbour), and afterwards the
keystate snap (``grounding``, within ``plan.keystate_snap_seconds``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from episcribe.modules.base import clean_text, snap_indices


def stitch(
    spans: Sequence[tuple[str, float, float]],
    timestamps: np.ndarray,
    max_steps: int,
    min_seconds: float = 0.0,
) -> list[tuple[int, str]]:
    """A gap-free cover of the episode: (start frame index, instruction) in time order.

    The first subtask starts at frame 0; starts are distinct real frames; each subtask
    lasts until the next one starts. ``max_steps`` > 0: at most that many subtasks; none
    shorter than ``min_seconds`` unless it is the only one. Two consecutive spans with the
    same words stay two subtasks (a grasp tried again is its own event).
    """
    first, last = float(timestamps[0]), float(timestamps[-1])
    items = []
    for text, start, end in spans:
        text = clean_text(text)
        if not text or not (finite(start) and finite(end)):
            continue
        start, end = sorted((min(max(start, first), last), min(max(end, first), last)))
        items.append((start, -end, len(items), text))
    if not items:
        return []
    items.sort()
    indices = snap_indices(timestamps, [it[0] for it in items])
    out: list[list] = []
    for index, (_, _, _, text) in zip(indices.tolist(), items, strict=True):
        if out and index <= out[-1][0]:
            continue  # the same start frame as an earlier (longer) subtask
        out.append([index, text])
    out[0][0] = 0
    while max_steps > 0 and len(out) > max_steps:
        _merge_shortest(out, timestamps)
    while len(out) > 1 and min(_lengths(out, timestamps)) < min_seconds - 1e-6:
        _merge_shortest(out, timestamps)
    return [(int(i), text) for i, text in out]


def finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _lengths(out: list[list], timestamps: np.ndarray) -> list[float]:
    """Seconds each subtask lasts (the last one until one frame period past the end)."""
    n = len(out)
    period = float(np.median(np.diff(timestamps))) if len(timestamps) > 1 else 0.0
    ends = [float(timestamps[out[k + 1][0]]) for k in range(n - 1)]
    ends.append(float(timestamps[-1]) + period)
    return [ends[k] - float(timestamps[out[k][0]]) for k in range(n)]


def _merge_shortest(out: list[list], timestamps: np.ndarray) -> None:
    """Merge the shortest subtask into its shorter neighbour, in place."""
    n = len(out)
    length = _lengths(out, timestamps)
    k = min(range(n), key=lambda j: (length[j], j))
    if k == 0:
        other = 1
    elif k == n - 1:
        other = k - 1
    else:
        other = k - 1 if length[k - 1] <= length[k + 1] else k + 1
    a, b = sorted((k, other))
    out[a] = [out[a][0], join_steps(out[a][1], out[b][1])]
    del out[b]


def join_steps(a: str, b: str) -> str:
    """ "Grasp the cup." + "Lift it" -> "Grasp the cup, then lift it"."""
    head = a.rstrip(" .;,")
    tail = b[:1].lower() + b[1:] if b[1:2].islower() or len(b) == 1 else b
    return f"{head}, then {tail}"

"""Keystates ground the plan: facts for the segment prompt, boundaries moved onto them.

The ``signals`` module stages one ``keystate`` row per keystate (a gripper closing or
opening, an arm coming to rest). The plan module lists those inside a window as facts in
its segment prompt, and after stitching moves every subtask boundary that lies within
``plan.keystate_snap_seconds`` of a keystate onto it (the nearest one), as long as the
subtasks keep their order; each move is staged as a ``snap`` row so a diff shows it.
The first subtask always starts at the first frame and is never moved.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from episcribe.lerobot.language import make_row
from episcribe.modules.base import EpisodeContext, frame_time, snap_indices
from episcribe.modules.signals.analysis import Keystate, parse_keystate

FACTS_HEADER = (
    "The robot's own sensors recorded these moments (exact, not seen in the frames); "
    "a boundary between skills usually falls on one of them:"
)


@dataclass(frozen=True)
class TimedKeystate:
    time: float
    keystate: Keystate

    def label(self) -> str:
        k = self.keystate
        return " ".join(part for part in (k.kind, k.arm, k.part) if part)


def upstream_keystates(ctx: EpisodeContext) -> list[TimedKeystate]:
    """The signals module's keystates for this episode, in time order ([] without it)."""
    out = []
    for row in ctx.upstream.get("signals", []):
        if row.get("style") != "keystate":
            continue
        kind, arm, part = parse_keystate(row["content"])
        frame = int(snap_indices(ctx.timestamps, [row["timestamp"]])[0])
        out.append(TimedKeystate(float(row["timestamp"]), Keystate(frame, kind, arm, part)))
    return sorted(out, key=lambda k: k.time)


def facts(keystates: Sequence[TimedKeystate], first: float, last: float) -> str:
    """The segment prompt's keystate lines for the window [first, last] ("" if none)."""
    inside = [k for k in keystates if first <= k.time <= last]
    if not inside:
        return ""
    lines = "\n".join(f"- {k.keystate.fact(k.time)}" for k in inside)
    return f"{FACTS_HEADER}\n{lines}\n"


def snap_boundaries(
    subtasks: list[tuple[int, str]],
    timestamps: np.ndarray,
    keystates: Sequence[TimedKeystate],
    tolerance: float,
) -> tuple[list[tuple[int, str]], list[dict]]:
    """Subtasks with boundaries moved onto keystates, and one ``snap`` row per move."""
    if tolerance <= 0 or not keystates or len(subtasks) < 2:
        return subtasks, []
    out = [list(s) for s in subtasks]
    rows = []
    for k in range(1, len(out)):
        start = frame_time(timestamps, out[k][0])
        near = min(keystates, key=lambda ks: (abs(ks.time - start), ks.time))
        target = near.keystate.frame
        upper = out[k + 1][0] if k + 1 < len(out) else len(timestamps)
        if abs(near.time - start) > tolerance + 1e-6 or target == out[k][0]:
            continue
        if not out[k - 1][0] < target < upper:
            continue  # would swap or merge two subtasks: the model's order stands
        out[k][0] = target
        content = json.dumps({"from": start, "keystate": near.label()}, sort_keys=True)
        rows.append(make_row("assistant", content, "snap", frame_time(timestamps, target)))
    return [(int(i), text) for i, text in out], rows

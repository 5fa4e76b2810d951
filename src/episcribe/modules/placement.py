"""Which frames the event rows sit on, so every event reaches training.

LeRobot's recipes train one sub-recipe per frame, and VQA has priority: a frame carrying
a VQA pair and a spoken exchange trains only the VQA pair, and a frame carrying VQA pairs
of two cameras needs one VQA binding per camera in the recipe. So events keep apart:

- frame 0 holds the robot's first spoken reply alone: no VQA tick sits on it;
- each camera's VQA ticks sit on frames of their own: a tick goes to the nearest frame
  (later first on a tie) that no reserved frame and no other VQA pair holds, at most
  half the tick spacing away (so it stays nearer its own tick than the next); a tick
  with no such frame is dropped;
- an interjection and the robot's reply move from their subtask boundary to the first
  frame at or after it that no VQA pair holds (before it only at the episode's end).

VQA frames depend only on the frame timestamps, ``vqa_emission_hz`` and the number of
cameras asked, so the interjections module computes them without waiting for the vqa
module: VQA needs neither the plan nor the interjections, and its jobs keep filling the
server from the start. The price: the interjection jobs take the VQA placement settings
(``vqa_frames`` in their settings), so changing the VQA rate re-runs interjections and
plan_update (a few calls per episode), never the other way round. Moving VQA off the
interjections instead would make every VQA job wait for the plan and re-ask all of an
episode's VQA calls whenever any plan prompt or setting changes. And a moved
interjection's refreshed plan (plan_update) sits a frame or two after the subtask's own
plan row rather than replacing it: the old plan is active for those frames.
"""

from __future__ import annotations

import numpy as np

from episcribe.modules.base import EpisodeContext, snap_indices

FIRST_SPEECH_FRAME = 0  # where the interjections module puts the robot's first reply


def vqa_frames(timestamps: np.ndarray, rate_hz: float, n_cameras: int) -> list[list[int | None]]:
    """For each tick at ``rate_hz`` from the first frame, each camera's frame index (None:
    the tick is dropped for that camera). Tick-major, in camera order."""
    ts = np.asarray(timestamps, dtype=np.float64)
    if rate_hz <= 0 or len(ts) == 0 or n_cameras <= 0:
        return []
    n_ticks = int(np.floor((ts[-1] - ts[0]) * rate_hz + 1e-6)) + 1
    ticks = np.unique(snap_indices(ts, ts[0] + np.arange(n_ticks, dtype=np.float64) / rate_hz))
    frame_s = (ts[-1] - ts[0]) / (len(ts) - 1) if len(ts) > 1 else 1.0
    reach = int((1.0 / rate_hz) / frame_s / 2 + 1e-6)
    taken = {FIRST_SPEECH_FRAME}
    placed = []
    for tick in ticks.tolist():
        row = []
        for _ in range(n_cameras):
            frame = _nearest_free(tick, taken, len(ts), reach)
            if frame is not None:
                taken.add(frame)
            row.append(frame)
        placed.append(row)
    return placed


def _nearest_free(index: int, taken: set[int], n: int, reach: int) -> int | None:
    for step in range(reach + 1):
        for frame in (index + step, index - step) if step else (index,):
            if 0 <= frame < n and frame not in taken:
                return frame
    return None


def vqa_cameras(ctx: EpisodeContext, restrict_to_default_camera: bool) -> list[str]:
    """The cameras the vqa module asks about, in the order its pairs are placed."""
    return [ctx.camera] if restrict_to_default_camera else list(ctx.dataset.cameras)


def vqa_frame_set(timestamps: np.ndarray, rate_hz: float, n_cameras: int) -> set[int]:
    """Every frame index holding a VQA pair of some camera."""
    return {f for tick in vqa_frames(timestamps, rate_hz, n_cameras) for f in tick if f is not None}


def interjection_frames(boundaries: list[int], avoid: set[int], n: int) -> list[int]:
    """Each boundary frame moved to the first frame at or after it that ``avoid``, frame 0
    and the interjections placed before it leave free (searching back only past the end)."""
    taken = set(avoid) | {FIRST_SPEECH_FRAME}
    placed = []
    for boundary in boundaries:
        later = (f for f in range(boundary, n) if f not in taken)
        earlier = (f for f in range(boundary - 1, 0, -1) if f not in taken)
        frame = next(later, None)
        frame = next(earlier, None) if frame is None else frame
        if frame is None:
            continue
        taken.add(frame)
        placed.append(frame)
    return placed

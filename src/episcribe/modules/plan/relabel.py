"""The seeded relabel pass (``plan.relabel``): each stitched subtask's label checked again.

WGO-Bench: labelling a segment from its own frames was right 56.1 % of the time, with the
previous, current and next segment's frames 61.0 %. So each subtask gets one call with
three sheets of ``RELABEL_TILES`` frames spread from start to end (previous span, this
span, next span; a plain grey sheet where there is no neighbour), its index and times,
the neighbours' labels, and its first label as a prior to verify and minimally correct,
at temperature 0. An unusable answer keeps the first label. The calls run concurrently.
"""

from __future__ import annotations

import asyncio

import numpy as np

from episcribe.modules.base import EpisodeContext, clean_text, frame_time, snap_indices
from episcribe.modules.plan import RELABEL_TILES, relabel_grid

NO_NEIGHBOUR = "(none: this is the {which} step)"


def span_times(timestamps: np.ndarray, start: int, stop: int) -> list[float]:
    """``RELABEL_TILES`` real frame times spread over frames [start, stop) (repeats when
    the span has fewer frames)."""
    last = max(start, stop - 1)
    picks = snap_indices(
        timestamps,
        np.linspace(frame_time(timestamps, start), frame_time(timestamps, last), RELABEL_TILES),
    )
    return [frame_time(timestamps, int(i)) for i in picks]


async def relabel(
    ctx: EpisodeContext, task: str, subtasks: list[tuple[int, str]]
) -> list[tuple[int, str]]:
    """The subtasks with their labels checked against the frames around each one."""
    ts = ctx.timestamps
    grid = relabel_grid(ctx.settings)
    starts = [i for i, _ in subtasks]
    stops = [*starts[1:], len(ts)]
    n = len(subtasks)

    async def sheet(k: int) -> str:
        urls, _ = await ctx.frames.sheets(ctx.camera, span_times(ts, starts[k], stops[k]), grid)
        return urls[0]

    # Each span's sheet once, shared by its own call and its neighbours' (more spans are in
    # flight at once than FrameSource.sheets remembers); a grey one on either side.
    blank = ctx.frames.blank_sheet(ctx.camera, grid, RELABEL_TILES)
    sheets = [blank, *await asyncio.gather(*(sheet(k) for k in range(n))), blank]

    async def one(k: int) -> str:
        prior = subtasks[k][1]
        urls = sheets[k : k + 3]  # the previous, this and the next span's
        fields = {
            "task": task or "(not given)",
            "index": k + 1,
            "count": n,
            "start": f"{frame_time(ts, starts[k]):.3f}",
            "end": f"{frame_time(ts, stops[k] - 1):.3f}",
            "previous": subtasks[k - 1][1] if k > 0 else NO_NEIGHBOUR.format(which="first"),
            "following": subtasks[k + 1][1] if k + 1 < n else NO_NEIGHBOUR.format(which="last"),
            "label": prior,
        }
        answer = await ctx.ask("relabel", fields, urls, temperature=0.0)
        text = clean_text((answer or {}).get("instruction"))
        if not text:
            ctx.skip("relabel answer")
            return prior
        return text

    labels = await asyncio.gather(*(one(k) for k in range(n)))
    return [(start, text) for start, text in zip(starts, labels, strict=True)]

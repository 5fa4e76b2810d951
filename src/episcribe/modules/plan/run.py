"""The plan module: task_aug, subtask, plan and memory rows (persistent).

Per episode:

1. **Effective task.** The dataset's task, or one derived from the video (``derive_task``
   call over frames sampled across the episode) when ``derive_task_from_video`` is
   ``always``, or ``if_short`` and the task is empty, under 3 words or a placeholder
   ("test", "debug", ...). A failed derivation falls back to the dataset's task (logged).
   A derived task is logged with the dataset task it replaced. Either way a staging-only
   ``task`` row at the first frame records it (``{"task", "from": "dataset"|"video"[,
   "dataset_task"]}``): the modules downstream read the task from there.
2. **task_aug** (role user, first frame): the effective task plus up to
   ``n_task_rephrasings`` rephrasings from one text-only call, de-duplicated
   case/whitespace-insensitively. With 0 there is no call and no task_aug row at all
   (LeRobot would otherwise train on the row in place of the task column).
3. **Subtasks** (describe -> segment). Frames of ``vlm.camera_key`` are sampled at
   ``frames_per_second`` on real frame timestamps (nearest frame, distinct; the last frame
   is always included), packed into contact sheets of ``SHEET_TILES`` frames with the
   timestamp burned into each tile (one image per sheet: ~4x fewer image tokens than one
   image per frame, at half the resolution per frame). Windows: fixed
   ``subtask_window_seconds`` windows, or, when the samples exceed ``max_video_frames``,
   the fewest equal windows that fit; a window still over the cap is thinned evenly.
   Per window: ``describe`` (if ``subtask_describe_first``) logs the visible changes (at
   most ``DESCRIBE_ENTRIES``, so the answer fits its budget at ``max_video_frames``), then
   ``segment`` splits it into at most its share of ``plan_max_steps`` subtasks. The
   segment call continues the describe conversation (frames, describe request, answer,
   then the segment request), so a prefix-caching server computes the frames once. All
   windows run concurrently, and the rephrasing call runs beside them.
4. **Stitching** (:func:`stitch`): spans are clamped to the episode, sorted, their starts
   snapped to real frames (several on one frame: the first kept), consecutive repeats of
   the same instruction merged, the first start moved to the first frame; each subtask is
   active from its start until the next start (a gap-free cover). Over
   ``plan_max_steps``, or while a subtask is shorter than ``min_subtask_seconds``: the
   shortest subtask is merged into its shorter neighbour ("A, then b"), so no part of the
   episode loses its label. Nothing usable from the
   model: one subtask, the effective task, over the whole episode (logged).
   With the signals module on, its keystates are facts in the segment prompt and each
   boundary near one moves onto it (``grounding``: snap rows record the moves). The
   model's own spans, before stitching, stay in staging as ``model_segment`` rows.
5. **plan** at every subtask start (``emit_plan``): the numbered subtasks still to do,
   the current one first. **memory** at every start but the first (``emit_memory``): one
   text-only call each, chained on the previous memory, so they run in sequence.

With ``use_video_url`` the describe and segment calls get, instead of contact sheets, one
mp4 clip per window (``FrameSource.clip``): the window's frames sampled at ``video_fps``
(so ``max_video_frames`` caps a clip's frames), each labelled with its timestamp, sent as
a base64 ``data:video/mp4`` ``video_url`` part (vLLM takes these for Qwen-VL models).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Sequence

import numpy as np

from episcribe.lerobot.language import make_row
from episcribe.modules.base import (
    EpisodeContext,
    clean_text,
    format_times,
    frame_time,
    is_placeholder_task,
    normalize_text,
    numbered,
    sample_times,
    snap_indices,
)
from episcribe.modules.plan import SHEET_TILES
from episcribe.modules.plan.grounding import facts, snap_boundaries, upstream_keystates

log = logging.getLogger(__name__)

MODULE = "plan"
DESCRIBE_ENTRIES = 12  # most describe log entries: ~50 tokens each fit the 768-token budget
FALLBACK_TASK = "Complete the task shown in the demonstration"


async def run_episode(ctx: EpisodeContext) -> list[dict]:
    s = ctx.settings
    ts = ctx.timestamps
    first = frame_time(ts, 0)
    rate = s["video_fps"] if s["use_video_url"] else s["frames_per_second"]
    windows = plan_windows(ts, rate, s["max_video_frames"], s["subtask_window_seconds"])
    total = sum(len(w) for w in windows)
    task_future = asyncio.ensure_future(_effective_task(ctx, s, windows))

    async def window_chain(times: list[float]) -> list[tuple[str, float, float]]:
        steps = max(1, math.ceil(s["plan_max_steps"] * len(times) / total))
        if s["use_video_url"]:
            urls, layout = await ctx.frames.clip(ctx.camera, times, s["video_fps"])
        else:
            urls, layout = await ctx.frames.sheets(ctx.camera, times, SHEET_TILES)
        frames = {
            "camera": ctx.camera,
            "layout": layout,
            "window": _window_note(times, ts, len(windows)),
            "timestamps": format_times(times),
        }
        history: list[dict] = []
        if s["subtask_describe_first"]:
            history = await _describe(ctx, frames, urls, len(times))
        task = await task_future
        return await _segment(ctx, task, times, frames, urls, history, steps, s)

    try:
        rephrasings, *spans = await asyncio.gather(
            _rephrasings(ctx, task_future, s["n_task_rephrasings"]),
            *(window_chain(w) for w in windows),
        )
        task = await task_future
    finally:
        if not task_future.done():
            task_future.cancel()

    model_spans = [span for window in spans for span in window]
    subtasks = stitch(
        model_spans,
        ts,
        s["plan_max_steps"],
        s["min_subtask_seconds"],
    )
    if not subtasks:
        log.warning(
            "episode %06d: the model gave no usable subtask; using the task as the only one",
            ctx.episode.index,
        )
        subtasks = [(0, task or FALLBACK_TASK)]
    subtasks, snaps = snap_boundaries(
        subtasks, ts, upstream_keystates(ctx), s["keystate_snap_seconds"]
    )

    rows: list[dict] = [task_row(task, own_task(ctx), first), *snaps]
    rows += model_segment_rows(model_spans, ts)
    if s["n_task_rephrasings"] > 0:
        for text in ([task] if task else []) + rephrasings:
            rows.append(make_row("user", text, "task_aug", first))
    starts = [frame_time(ts, i) for i, _ in subtasks]
    steps = [text for _, text in subtasks]
    for k, (start, text) in enumerate(zip(starts, steps, strict=True)):
        rows.append(make_row("assistant", text, "subtask", start))
        if s["emit_plan"]:
            rows.append(make_row("assistant", numbered(steps[k:]), "plan", start))
    if s["emit_memory"]:
        for start, memory in await _memories(ctx, task, steps, starts):
            rows.append(make_row("assistant", memory, "memory", start))
    return rows


# -- frame sampling -------------------------------------------------------------------


def plan_windows(
    timestamps: np.ndarray, fps: float, max_frames: int, window_seconds: float
) -> list[list[float]]:
    """Sampled real frame times, grouped into the windows of one describe/segment pass each."""
    first, last = frame_time(timestamps, 0), frame_time(timestamps, len(timestamps) - 1)
    times = sample_times(timestamps, first, last, fps)
    if times[-1] != last:
        times.append(last)
    if window_seconds and window_seconds > 0:
        groups: dict[int, list[float]] = {}
        for t in times:
            groups.setdefault(int((t - first) // window_seconds), []).append(t)
        windows = [groups[k] for k in sorted(groups)]
    else:
        n = math.ceil(len(times) / max_frames)
        windows = [list(chunk) for chunk in np.array_split(np.array(times), n)]
        windows = [[float(t) for t in w] for w in windows]
    return [_thin(w, max_frames) for w in windows if w]


def _thin(times: list[float], cap: int) -> list[float]:
    """At most ``cap`` of ``times``, evenly spread, first and last kept."""
    if len(times) <= cap:
        return times
    if cap == 1:
        return [times[0]]
    picks = np.unique(np.round(np.linspace(0, len(times) - 1, cap)).astype(int))
    return [times[i] for i in picks]


def _window_note(times: Sequence[float], ts: np.ndarray, n_windows: int) -> str:
    if n_windows == 1:
        return "The frames cover the whole episode."
    return (
        f"The frames cover the part of the episode from {times[0]:.3f} s to {times[-1]:.3f} s "
        f"(the whole episode runs from {frame_time(ts, 0):.3f} s to "
        f"{frame_time(ts, len(ts) - 1):.3f} s)."
    )


# -- model calls ----------------------------------------------------------------------


def own_task(ctx: EpisodeContext) -> str:
    return " ".join(ctx.episode.task.split())


def task_row(task: str, dataset_task: str, timestamp: float) -> dict:
    """The staging-only row of the task the episode was annotated under."""
    content = {"task": task, "from": "dataset" if task == dataset_task else "video"}
    if task != dataset_task:
        content["dataset_task"] = dataset_task
    return make_row("assistant", json.dumps(content, sort_keys=True), "task", timestamp)


async def _effective_task(ctx: EpisodeContext, s: dict, windows: list[list[float]]) -> str:
    own = own_task(ctx)
    mode = s["derive_task_from_video"]
    if mode == "off" or (mode == "if_short" and not is_placeholder_task(own)):
        return own
    times = [t for w in windows for t in w]
    times = _thin(times, min(len(times), s["max_video_frames"]))
    urls, layout = await ctx.frames.sheets(ctx.camera, times, SHEET_TILES)
    fields = {
        "camera": ctx.camera,
        "layout": layout,
        "timestamps": format_times(times),
        "dataset_task": own,
    }
    answer = await ctx.ask("derive_task", fields, urls)
    derived = clean_text((answer or {}).get("task"))
    if not derived:
        ctx.skip("derive_task answer")
        log.warning(
            "episode %06d: could not derive the task from the video; using the dataset's task %r",
            ctx.episode.index,
            own,
        )
        return own
    log.info(
        "episode %06d: task derived from the video: %r, in place of the dataset's %r",
        ctx.episode.index,
        derived,
        own,
    )
    return derived


async def _rephrasings(ctx: EpisodeContext, task_future: asyncio.Future, n: int) -> list[str]:
    task = await task_future
    if n <= 0 or not task:
        return []
    prompt = ctx.prompts.get("task_rephrasings")
    schema = prompt.schema_with_items("rephrasings", n, n)
    answer = await ctx.ask("task_rephrasings", {"task": task, "n": n}, schema=schema)
    if answer is None:
        ctx.skip("task_rephrasings answer")
        return []
    seen = {normalize_text(task)}
    out: list[str] = []
    for item in answer.get("rephrasings", []):
        text = clean_text(item)
        key = normalize_text(text)
        if not text or key in seen:
            continue
        seen.add(key)
        out.append(text)
    return out[:n]


async def _describe(ctx, frames: dict, urls, n_frames: int) -> list[dict]:
    """The describe conversation (request and answer) for segment to continue; [] if none."""
    from episcribe.vlm.client import assistant_message

    entries = min(n_frames, DESCRIBE_ENTRIES)
    fields = {**frames, "max_entries": entries}
    prompt = ctx.prompts.get("describe")
    schema = prompt.schema_with_items("narration", 1, entries)
    answer = await ctx.ask("describe", fields, urls, schema=schema)
    lines = []
    for item in (answer or {}).get("narration", []):
        obs = clean_text(item.get("observation"))
        t = item.get("time")
        if obs and _finite(t):
            lines.append({"time": float(t), "observation": obs})
    if not lines:
        ctx.skip("describe answer")
        return []
    told = json.dumps({"narration": lines}, ensure_ascii=False)
    return [*ctx.messages("describe", fields, urls), assistant_message(told)]


async def _segment(ctx, task, times, frames, urls, history, steps, s):
    prompt = ctx.prompts.get("segment")
    if history:
        context = (
            "Using the frames above and the log you wrote of them, label the demonstration "
            "for a robot policy that learns to follow step-by-step commands."
        )
    else:
        context = (
            f"These images are frames of a recorded robot demonstration from the camera "
            f'"{frames["camera"]}".\n{frames["layout"]}\n{frames["window"]}\n'
            f"Frame timestamps (s): {frames['timestamps']}\n\n"
            "Label the demonstration for a robot policy that learns to follow step-by-step "
            "commands."
        )
    fields = {
        "context": context,
        "task": task or "(not given: infer it from the frames)",
        "max_steps": steps,
        "min_seconds": f"{s['min_subtask_seconds']:g}",
        "first": f"{times[0]:.3f}",
        "last": f"{times[-1]:.3f}",
        "keystates": facts(upstream_keystates(ctx), times[0], times[-1]),
    }
    schema = prompt.schema_with_items("subtasks", 1, steps)
    answer = await ctx.ask(
        "segment", fields, () if history else urls, schema=schema, history=history
    )
    if answer is None:
        ctx.skip("segment answer")
        return []
    lo, hi = times[0], times[-1]
    spans = []
    for item in answer.get("subtasks", []):
        span = _span(item, lo, hi)
        if span is None:
            ctx.skip("segment subtask")
        else:
            spans.append(span)
    return spans


def _span(item, lo: float, hi: float) -> tuple[str, float, float] | None:
    """(instruction, start, end) clamped to [lo, hi]; None when unusable."""
    text = clean_text(item.get("instruction")) if isinstance(item, dict) else ""
    start, end = (item.get(k) if isinstance(item, dict) else None for k in ("start", "end"))
    if not text or not _finite(start):
        return None
    end = end if _finite(end) else start
    start, end = sorted((min(max(float(start), lo), hi), min(max(float(end), lo), hi)))
    return text, start, end


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


async def _memories(ctx, task, steps, starts) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    memory = ""
    for k in range(1, len(steps)):
        fields = {
            "task": task or "(not given)",
            "previous_memory": memory or "(nothing yet: this is the first step you finished)",
            "completed": steps[k - 1],
            "remaining": "; ".join(steps[k:]),
        }
        answer = await ctx.ask("memory", fields)
        new = clean_text((answer or {}).get("memory"))
        if not new:
            ctx.skip("memory answer")
            continue
        memory = new
        out.append((starts[k], memory))
    return out


# -- stitching ------------------------------------------------------------------------


def model_segment_rows(spans: Sequence[tuple[str, float, float]], ts: np.ndarray) -> list[dict]:
    """One staging-only ``model_segment`` row per span the model gave, before stitching.

    ``episcribe eval`` scores them beside the written subtasks, so what stitching and
    keystate snapping cost is visible. The row sits on the frame nearest the span's start.
    """
    if not spans:
        return []
    rows = []
    indices = snap_indices(ts, [span[1] for span in spans]).tolist()
    for (text, start, end), index in zip(spans, indices, strict=True):
        content = json.dumps({"start": start, "end": end, "instruction": text}, sort_keys=True)
        rows.append(make_row("assistant", content, "model_segment", frame_time(ts, index)))
    return rows


def stitch(
    spans: Sequence[tuple[str, float, float]],
    timestamps: np.ndarray,
    max_steps: int,
    min_seconds: float = 0.0,
) -> list[tuple[int, str]]:
    """A gap-free cover of the episode: (start frame index, instruction) in time order.

    The first subtask starts at frame 0; starts are distinct real frames; each subtask
    lasts until the next one starts; at most ``max_steps`` subtasks, none shorter than
    ``min_seconds`` unless it is the only one.
    """
    first, last = float(timestamps[0]), float(timestamps[-1])
    items = []
    for text, start, end in spans:
        text = clean_text(text)
        if not text or not (_finite(start) and _finite(end)):
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
        if out and normalize_text(text) == normalize_text(out[-1][1]):
            continue  # the same step continuing (e.g. across a window boundary)
        out.append([index, text])
    out[0][0] = 0
    while len(out) > max(1, max_steps):
        _merge_shortest(out, timestamps)
    while len(out) > 1 and min(_lengths(out, timestamps)) < min_seconds - 1e-6:
        _merge_shortest(out, timestamps)
    return [(int(i), text) for i, text in out]


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

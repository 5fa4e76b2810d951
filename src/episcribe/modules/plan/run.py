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
3. **Subtasks** (segment, optionally after describe). Frames of ``vlm.camera_key`` are
   sampled at ``frames_per_second`` on real frame timestamps (nearest frame, distinct; the
   last frame is always included), packed into contact sheets of ``sheet_columns`` x
   ``sheet_rows`` tiles ``tile_width`` px wide with each tile's time burned in (WGO-Bench:
   sheets beat a frame-to-time list and single frames, at ~12x less cost than per-frame
   input). The whole episode is one request when its frames fit ``max_video_frames``;
   longer ones are split into windows overlapping by one sheet and reconciled there
   (``windows``). Per window: ``describe`` (if ``subtask_describe_first``) logs the
   visible changes (at most ``DESCRIBE_ENTRIES``), then ``segment`` splits it into
   subtasks: at most its share of ``plan_max_steps``, or with 0 one a second of the
   window and no more than the segment budget holds. The segment call continues the
   describe conversation (a prefix-caching server computes the frames once). All windows
   run concurrently, and the rephrasing call runs beside them.
4. **Stitching** (``stitching.stitch``): every start the model gave on its nearest real
   frame, gaps filled by the subtask before them, nothing merged unless over an explicit
   ``plan_max_steps`` or under ``min_subtask_seconds``. Nothing usable from the model:
   one subtask, the effective task, over the whole episode (logged). With the signals
   module on, its keystates are facts in the segment prompt and each boundary near one
   moves onto it (``grounding``: snap rows record the moves). With ``relabel``, each
   subtask's label is checked once more with its neighbours' frames (``relabel``). The
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
    snap_indices,
)
from episcribe.modules.plan import sheet_grid
from episcribe.modules.plan.grounding import facts, snap_boundaries, upstream_keystates
from episcribe.modules.plan.relabel import relabel
from episcribe.modules.plan.stitching import finite, stitch
from episcribe.modules.plan.windows import plan_windows, reconcile, thin

log = logging.getLogger(__name__)

MODULE = "plan"
DESCRIBE_ENTRIES = 12  # most describe log entries: ~50 tokens each fit the 768-token budget
# Without plan.plan_max_steps: at most one subtask a second of the window (WGO-Bench gold:
# median 15 subtasks an episode, up to 58, a third under 2 s), and no more than the segment
# budget holds at ~50 tokens a subtask (instruction of <= 120 characters, two times).
AUTO_SECONDS_PER_STEP = 1.0
TOKENS_PER_SUBTASK = 50
FALLBACK_TASK = "Complete the task shown in the demonstration"


async def run_episode(ctx: EpisodeContext) -> list[dict]:
    s = ctx.settings
    ts = ctx.timestamps
    first = frame_time(ts, 0)
    grid = sheet_grid(s)
    rate = s["video_fps"] if s["use_video_url"] else s["frames_per_second"]
    windows = plan_windows(
        ts, rate, s["max_video_frames"], s["subtask_window_seconds"], overlap=grid.tiles
    )
    total = sum(len(w) for w in windows)
    task_future = asyncio.ensure_future(_effective_task(ctx, s, windows))

    async def window_chain(times: list[float]) -> list[tuple[str, float, float]]:
        steps = _steps(s, ctx.vlm, times, total)
        if s["use_video_url"]:
            urls, layout = await ctx.frames.clip(ctx.camera, times, s["video_fps"])
        else:
            urls, layout = await ctx.frames.sheets(ctx.camera, times, grid)
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

    model_spans = reconcile(windows, spans, 1.0 / rate)
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
    if s["relabel"]:
        subtasks = await relabel(ctx, task, subtasks)

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


def _steps(s: dict, vlm: dict, times: list[float], total: int) -> int:
    """Most subtasks one segment request may give (its schema's maxItems)."""
    if s["plan_max_steps"] > 0:
        return max(1, math.ceil(s["plan_max_steps"] * len(times) / total))
    seconds = times[-1] - times[0]
    budget = int(vlm["max_completion_tokens"]["segment"]) // TOKENS_PER_SUBTASK
    return max(1, min(math.ceil(seconds / AUTO_SECONDS_PER_STEP), budget))


def _window_note(times: Sequence[float], ts: np.ndarray, n_windows: int) -> str:
    if n_windows == 1:
        return "The frames cover the whole episode."
    return (
        f"The frames cover the part of the episode from {times[0]:.3f} s to {times[-1]:.3f} s "
        f"(the whole episode runs from {frame_time(ts, 0):.3f} s to "
        f"{frame_time(ts, len(ts) - 1):.3f} s). An event already under way at the first "
        "frame or still under way at the last one simply runs to that edge: do not cut there."
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
    times = sorted({t for w in windows for t in w})
    times = thin(times, min(len(times), s["max_video_frames"]))
    urls, layout = await ctx.frames.sheets(ctx.camera, times, sheet_grid(s))
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
        if obs and finite(t):
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
    if not text or not finite(start):
        return None
    end = end if finite(end) else start
    start, end = sorted((min(max(float(start), lo), hi), min(max(float(end), lo), hi)))
    return text, start, end


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


# -- staging ------------------------------------------------------------------------


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

"""The vqa module: frame-grounded question/answer pairs (event rows).

Ticks at ``vqa_emission_hz`` from the first frame, each snapped to the nearest real frame
(vectorised ``searchsorted``; ticks landing on the same frame count once), then moved so
that no frame carries two cameras' pairs or the robot's first spoken reply
(``placement.vqa_frames``: LeRobot trains one event kind per frame). Cameras: every
colour camera of the dataset, or only ``vlm.camera_key`` with
``restrict_to_default_camera``. For each (tick, camera), in tick-major, dataset-camera
order, a question type is drawn from
bbox / keypoint / count / attribute / spatial with the RNG seeded from (seed, episode,
"vqa"), and one ``vqa_<type>`` call on that frame (downscaled to ``vlm.image_max_side``)
asks the model to pose a question of that type and answer it. The request names the camera
and the episode's task (the dataset's: VQA does not wait for the plan module); the
instructions before it are the same for every call of a type, so a prefix-caching server
computes them once.

Coordinates (``coordinate_space``): the model answers in 0-1000 normalized coordinates
(``normalized_1000``, Qwen-VL style) or in pixels of the image it was shown (``pixels``);
both are converted to the source video's pixels (``VideoSegment.width/height``), rounded
to whole pixels and clipped to the image. Boxes with no area after clipping and points
outside the image are dropped; a pair with nothing left, an empty question or text field,
or a failed call is skipped and counted. So there is at most one (vqa, user) and one
(vqa, assistant) row per (timestamp, camera), and the answer is JSON (sorted keys) in its
SPEC shape.

Frames are decoded per camera (cameras concurrently) in chunks, and each chunk's calls
start as soon as it is encoded, so all calls of an episode are in flight together while
only one chunk of images per camera is held in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

from episcribe.lerobot.language import make_row
from episcribe.modules.base import EpisodeContext, clean_text, frame_time, rng_for
from episcribe.modules.placement import vqa_cameras, vqa_frames
from episcribe.modules.vqa import QUESTION_TYPES

log = logging.getLogger(__name__)

MODULE = "vqa"
ATTRIBUTE_KEYS = ("label", "attribute", "value")
SPATIAL_KEYS = ("subject", "relation", "object")
DECODE_CHUNK = 32  # frames decoded (and held as images) at once per camera


async def run_episode(ctx: EpisodeContext) -> list[dict]:
    s = ctx.settings
    ts = ctx.timestamps
    cameras = vqa_cameras(ctx, s["restrict_to_default_camera"])
    placed = vqa_frames(ts, s["vqa_emission_hz"], len(cameras))
    # (time, camera) of every pair, tick-major in camera order: the order types are drawn
    ticks = [
        (frame_time(ts, frame), cam)
        for tick in placed
        for cam, frame in zip(cameras, tick, strict=True)
        if frame is not None
    ]
    rng = rng_for(ctx.seed, ctx.episode.index, MODULE)
    kinds = {tick: rng.choice(QUESTION_TYPES) for tick in ticks}
    space = s["coordinate_space"]
    task = " ".join(ctx.episode.task.split()) or "(not given)"

    calls: dict[tuple[float, str], asyncio.Task] = {}

    async def produce(cam: str) -> None:
        """Decode and encode ``cam``'s frames chunk by chunk, starting each chunk's calls."""
        segment = ctx.frames.segment(cam)
        source = (segment.width, segment.height)
        times = [t for t, c in ticks if c == cam]
        for i in range(0, len(times), DECODE_CHUNK):
            chunk = times[i : i + DECODE_CHUNK]
            images = await ctx.frames.get(cam, chunk)
            urls = await ctx.frames.data_urls(images)
            for t, image, url in zip(chunk, images, urls, strict=True):
                shown = ctx.frames.shown_size(*image.size)
                coro = _pair(ctx, t, cam, kinds[(t, cam)], url, space, shown, source, task)
                calls[(t, cam)] = asyncio.ensure_future(coro)

    try:
        await asyncio.gather(*(produce(cam) for cam in cameras))
        results = await asyncio.gather(*(calls[tick] for tick in ticks))
    finally:
        for call in calls.values():
            call.cancel()
    return [row for pair in results for row in pair]


def coordinate_system(space: str, shown: tuple[int, int]) -> str:
    if space == "normalized_1000":
        return (
            "Coordinate system: normalized 0-1000: x runs from 0 at the left edge to 1000 at "
            "the right edge, y from 0 at the top edge to 1000 at the bottom edge."
        )
    w, h = shown
    return (
        f"Coordinate system: pixels of the image as shown ({w}x{h}): x runs from 0 at the "
        f"left edge to {w} at the right edge, y from 0 at the top edge to {h} at the bottom."
    )


async def _pair(ctx, t, camera, qtype, url, space, shown, source, task) -> list[dict]:
    kind = f"vqa_{qtype}"
    fields = {"camera": camera, "task": task, "coordinate_system": coordinate_system(space, shown)}
    answer = await ctx.ask(kind, fields, [url])
    question = clean_text((answer or {}).get("question"))
    converted = convert_answer(qtype, (answer or {}).get("answer"), space, shown, source)
    if not question or converted is None:
        ctx.skip(f"{kind} answer at {t:.3f}s on {camera}")
        return []
    content = json.dumps(converted, sort_keys=True, ensure_ascii=False)
    return [
        make_row("user", question, "vqa", t, camera),
        make_row("assistant", content, "vqa", t, camera),
    ]


# -- answers in the SPEC shapes, in source pixels ---------------------------------------


def convert_answer(
    qtype: str, answer: Any, space: str, shown: tuple[int, int], source: tuple[int, int]
) -> dict | None:
    """The answer in its SPEC shape with coordinates in source pixels; None if unusable."""
    if not isinstance(answer, dict):
        return None
    scale = _scale(space, shown, source)
    if qtype == "bbox":
        detections = []
        for det in answer.get("detections") or []:
            label = clean_text(det.get("label")) if isinstance(det, dict) else ""
            box = _box(det.get("bbox") if isinstance(det, dict) else None, scale, source)
            if label and box is not None:
                detections.append({"label": label, "bbox_format": "xyxy", "bbox": box})
        return {"detections": detections} if detections else None
    if qtype == "keypoint":
        label = clean_text(answer.get("label"))
        point = _point(answer.get("point"), scale, source)
        if not label or point is None:
            return None
        return {"label": label, "point_format": "xy", "point": point}
    if qtype == "count":
        label, count = clean_text(answer.get("label")), answer.get("count")
        if not label or isinstance(count, bool) or not isinstance(count, int) or count < 0:
            return None
        return {"label": label, "count": count}
    keys = ATTRIBUTE_KEYS if qtype == "attribute" else SPATIAL_KEYS
    values = {k: clean_text(answer.get(k)) for k in keys}
    return values if all(values.values()) else None


def _scale(space: str, shown: tuple[int, int], source: tuple[int, int]) -> tuple[float, float]:
    if space == "normalized_1000":
        return source[0] / 1000.0, source[1] / 1000.0
    return source[0] / shown[0], source[1] / shown[1]


def _numbers(values: Any, n: int) -> list[float] | None:
    if not isinstance(values, list | tuple) or len(values) != n:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    if not all(math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def _box(values: Any, scale, source) -> list[int] | None:
    """[x1, y1, x2, y2] in source pixels, clipped to the image; None without area."""
    nums = _numbers(values, 4)
    if nums is None:
        return None
    (sx, sy), (w, h) = scale, source
    x1, x2 = sorted((nums[0] * sx, nums[2] * sx))
    y1, y2 = sorted((nums[1] * sy, nums[3] * sy))
    box = [
        round(min(max(x1, 0.0), w)),
        round(min(max(y1, 0.0), h)),
        round(min(max(x2, 0.0), w)),
        round(min(max(y2, 0.0), h)),
    ]
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    return box


def _point(values: Any, scale, source) -> list[int] | None:
    """[x, y] in source pixels; None when outside the image."""
    nums = _numbers(values, 2)
    if nums is None:
        return None
    (sx, sy), (w, h) = scale, source
    x, y = nums[0] * sx, nums[1] * sy
    if not (0 <= x <= w and 0 <= y <= h):
        return None
    return [min(round(x), w), min(round(y), h)]

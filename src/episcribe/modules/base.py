"""What every annotation module gets for one episode, and helpers they share.

A module is ``async def run_episode(ctx: EpisodeContext) -> list[dict]``: it reads the
episode (frame timestamps, task, videos) through ``ctx``, asks the model through
``ctx.client`` with the prompts of ``ctx.prompts``, and returns rows built with
``language.make_row`` / ``language.speech_atom``. An answer that is missing (the client
returns None after its retries), empty or out of range is skipped and counted in
``ctx.skipped``; it never raises. Modules never import validation or writing code.

Timestamps: every row a module emits sits on one of the episode's real frame timestamps
(``snap`` maps any time to the nearest one, vectorised), so event rows pass validation
and persistent rows line up with frames.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from episcribe.lerobot.dataset import Episode, LeRobotDataset
from episcribe.lerobot.frames import (
    SheetGrid,
    burn_label,
    decode_frames,
    jpeg_data_url,
    mp4_data_url,
)
from episcribe.modules.prompts import PromptSet

if TYPE_CHECKING:  # openai is slow to import: only jobs that call the model pay for it
    from episcribe.vlm.client import VlmClient

log = logging.getLogger(__name__)

# Task strings that say nothing about the task (compared case-insensitively).
PLACEHOLDER_TASKS = frozenset({"test", "debug", "task", "todo", "none", "n/a"})
MIN_TASK_WORDS = 3


SHEETS_KEPT = 4  # sheets() results remembered per episode (a few MB of JPEG at most)


class FrameSource:
    """Decoded frames of one episode, per (camera, timestamp), with a bounded cache.

    Decoding runs in a worker thread (``asyncio.to_thread``: the job's one FIFO frames
    thread, see ``annotate``), so it overlaps the model calls in flight. Requests for the
    same camera are serialised so a frame asked for twice is decoded once. The cache keeps at
    most ``cache_size`` images (least recently used dropped): long episodes must not hold
    every frame in memory.

    ``sheets`` remembers its last few results, so calls that send the same frames (the
    plan module's describe and segment, derive_task over the same window) share one decode
    and one JPEG encoding, even when they ask at the same time.
    """

    def __init__(self, dataset: LeRobotDataset, episode: Episode, vlm: dict, cache_size: int = 32):
        self.dataset = dataset
        self.episode = episode
        self.max_side = int(vlm.get("image_max_side") or 768)
        self.quality = int(vlm.get("jpeg_quality") or 85)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, float], Image.Image] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._sheets: OrderedDict[tuple, asyncio.Future] = OrderedDict()
        self.decoded = 0
        self.encoded = 0  # JPEG data URLs made

    def segment(self, camera: str):
        return self.episode.info.videos[camera]

    async def get(self, camera: str, timestamps: Sequence[float]) -> list[Image.Image]:
        """Frames of ``camera`` at these episode timestamps, in the order asked."""
        keys = [(camera, float(t)) for t in timestamps]
        lock = self._locks.setdefault(camera, asyncio.Lock())
        async with lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            missing = sorted({k[1] for k in keys if k not in found})
            if missing:
                images = await asyncio.to_thread(decode_frames, self.segment(camera), missing)
                self.decoded += len(missing)
                for t, image in zip(missing, images, strict=True):
                    found[(camera, t)] = image
                    self._remember((camera, t), image)
            for k in keys:
                if k in self._cache:
                    self._cache.move_to_end(k)
        return [found[k] for k in keys]

    def _remember(self, key: tuple[str, float], image: Image.Image) -> None:
        self._cache[key] = image
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def data_url(self, image: Image.Image) -> str:
        """The JPEG data URL the model is sent (longer side <= vlm.image_max_side)."""
        self.encoded += 1
        return jpeg_data_url(image, self.max_side, self.quality)

    async def data_urls(self, images: Sequence[Image.Image]) -> list[str]:
        """``data_url`` of each image, encoded in a worker thread."""
        return await asyncio.to_thread(lambda: [self.data_url(im) for im in images])

    def shown_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of a ``width`` x ``height`` image as sent (same rule as encode_jpeg)."""
        if max(width, height) <= self.max_side:
            return width, height
        scale = self.max_side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    async def sheets(
        self, camera: str, timestamps: Sequence[float], grid: SheetGrid | int
    ) -> tuple[list[str], str]:
        """Data URLs of the frames at ``timestamps``, timestamp burned in, and a layout line.

        A :class:`SheetGrid` packs consecutive frames into contact sheets of its tiles
        (fewer image tokens per frame), sent at their built size; ``1`` sends each frame as
        its own labelled image (longer side <= vlm.image_max_side). The same request again
        (while the first is in flight, or among the last ``SHEETS_KEPT``) gets the same
        URLs without decoding or encoding anything.
        """
        key = (camera, tuple(float(t) for t in timestamps), grid)
        future = self._sheets.get(key)
        if future is None or (future.done() and (future.cancelled() or future.exception())):
            future = asyncio.ensure_future(self._make_sheets(camera, timestamps, grid))
            self._sheets[key] = future
            while len(self._sheets) > SHEETS_KEPT:
                self._sheets.popitem(last=False)
        else:
            self._sheets.move_to_end(key)
        urls, layout = await asyncio.shield(future)
        return list(urls), layout

    async def _make_sheets(
        self, camera: str, timestamps: Sequence[float], grid: SheetGrid | int
    ) -> tuple[list[str], str]:
        images = await self.get(camera, timestamps)
        labels = [f"{float(t):.3f}s" for t in timestamps]

        def build() -> list[str]:
            if not isinstance(grid, SheetGrid):
                pairs = zip(images, labels, strict=True)
                return [self.data_url(burn_label(im, lb)) for im, lb in pairs]
            return [self.sheet_url(sheet, grid) for sheet in grid.sheets(images, labels)]

        urls = await asyncio.to_thread(build)
        if not isinstance(grid, SheetGrid):
            layout = (
                f"You are shown {len(urls)} image(s), one per frame in time order, each "
                "labelled with its timestamp in seconds in the top-left corner."
            )
        else:
            layout = (
                f"You are shown {len(urls)} contact sheet(s) of up to {grid.tiles} frames each "
                f"({grid.columns} columns, {grid.rows} rows); tiles run in time order, left to "
                "right and top to bottom, and each tile is labelled with its timestamp in "
                "seconds in its top-left corner."
            )
        return urls, layout

    def sheet_url(self, sheet: Image.Image, grid: SheetGrid) -> str:
        """A contact sheet's JPEG data URL at its built size and the grid's quality."""
        self.encoded += 1
        return jpeg_data_url(sheet, max(sheet.size), grid.quality)

    def blank_sheet(self, camera: str, grid: SheetGrid, tiles: int) -> str:
        """The data URL of a grey sheet the size of ``tiles`` frames of ``camera``."""
        segment = self.segment(camera)
        return self.sheet_url(grid.blank(segment.width, segment.height, tiles), grid)

    async def clip(
        self, camera: str, timestamps: Sequence[float], fps: float
    ) -> tuple[list[str], str]:
        """A ``data:video/mp4`` URL of the frames at ``timestamps`` played at ``fps``, each
        labelled with its timestamp, and a layout line (plan.use_video_url)."""
        images = await self.get(camera, timestamps)

        def build() -> str:
            pairs = zip(images, timestamps, strict=True)
            labelled = [burn_label(im, f"{float(t):.3f}s") for im, t in pairs]
            return mp4_data_url(labelled, fps, self.max_side)

        url = await asyncio.to_thread(build)
        log.info(
            "episode %06d: clip of %s, %.3f-%.3f s, %d frames at %g fps: %d bytes (base64)",
            self.episode.index,
            camera,
            timestamps[0],
            timestamps[-1],
            len(images),
            fps,
            len(url),
        )
        layout = (
            f"You are shown one video clip of {len(images)} frames in time order, played at "
            f"{fps:g} frames per second; each frame is labelled with its timestamp in seconds "
            "in its top-left corner."
        )
        return [url], layout


@dataclass
class EpisodeContext:
    """Everything a module needs for one episode."""

    dataset: LeRobotDataset
    episode: Episode
    client: VlmClient
    prompts: PromptSet
    settings: dict  # this module's config section, defaults filled
    vlm: dict  # the vlm section; camera_key resolved to a real camera
    seed: int | None
    upstream: dict[str, list[dict]]  # staging rows of the modules this one depends on
    frames: FrameSource
    skipped: int = 0  # answers that were missing, empty, out of range or invalid
    failed_calls: int = 0  # calls with no answer after the client's retries

    @property
    def camera(self) -> str:
        camera = self.vlm.get("camera_key") or self.dataset.cameras[0]
        return camera

    @property
    def timestamps(self) -> np.ndarray:
        return self.episode.timestamps

    def skip(self, what: str) -> None:
        """Count a skipped answer, with a DEBUG line saying which."""
        self.skipped += 1
        log.debug("episode %06d: skipped %s", self.episode.index, what)

    def messages(
        self, kind: str, fields: dict, image_urls: Sequence[str] = (), history: Sequence = ()
    ) -> list[dict]:
        """The chat messages of a ``kind`` call: its prompt with ``fields``, after ``history``.

        The template's instructions part is the system message when the call opens the
        conversation (a chat template takes a system message only first); continuing
        ``history``, it goes into the user turn. The images come first in the user turn.
        """
        from episcribe.vlm.client import system_message, user_message

        instructions, request = self.prompts.get(kind).render_parts(**fields)
        out = list(history)
        if instructions and not out:
            out.append(system_message(instructions))
        elif instructions:
            request = f"{instructions}\n\n{request}"
        out.append(user_message(request, list(image_urls)))
        return out

    async def ask(
        self,
        kind: str,
        fields: dict,
        image_urls: Sequence[str] = (),
        *,
        schema: dict | None = None,
        history: Sequence = (),
        temperature: float | None = None,
    ) -> dict | None:
        """One model call of ``kind``: its answer dict, or None (already logged by the client).

        ``temperature``: this call's, in place of vlm.temperature."""
        prompt_schema = schema if schema is not None else self.prompts.get(kind).schema
        messages = self.messages(kind, fields, image_urls, history)
        answer = await self.client.complete_json(
            kind, messages, prompt_schema, temperature=temperature
        )
        # An episode with a failed call is incomplete: annotate neither caches it nor
        # takes it as done.
        self.failed_calls += answer is None
        return answer


def rng_for(seed: int | None, episode_index: int, module: str) -> random.Random:
    """A RNG seeded from ``f"{seed}:{episode}:{module}"`` via sha256 (stable across runs)."""
    digest = hashlib.sha256(f"{seed}:{int(episode_index)}:{module}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def snap_indices(timestamps: np.ndarray, times: Sequence[float] | np.ndarray) -> np.ndarray:
    """Index of the nearest frame timestamp for each time (ties go to the earlier frame).

    ``timestamps`` must be sorted ascending (frame order). Vectorised: O(n log frames).
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    right = np.clip(np.searchsorted(ts, t, side="left"), 0, len(ts) - 1)
    left = np.clip(right - 1, 0, len(ts) - 1)
    pick_left = np.abs(t - ts[left]) <= np.abs(ts[right] - t)
    return np.where(pick_left, left, right)


def frame_time(timestamps: np.ndarray, index: int) -> float:
    """The exact stored timestamp of frame ``index`` (float32 widened to float)."""
    return float(np.float32(timestamps[int(index)]))


def sample_times(timestamps: np.ndarray, start: float, end: float, rate_hz: float) -> list[float]:
    """Real frame timestamps at ``rate_hz`` ticks from ``start`` to ``end``, distinct, sorted."""
    if rate_hz <= 0 or end < start:
        return []
    n = int(np.floor((end - start) * rate_hz + 1e-6)) + 1
    ticks = start + np.arange(n, dtype=np.float64) / rate_hz
    idx = np.unique(snap_indices(timestamps, ticks))
    return [frame_time(timestamps, i) for i in idx]


def format_times(times: Sequence[float]) -> str:
    """The ``Frame timestamps (s):`` list: seconds with 3 decimals, comma-separated."""
    return ", ".join(f"{float(t):.3f}" for t in times)


def is_placeholder_task(task: str) -> bool:
    """Empty, shorter than 3 words, or a placeholder like "test"."""
    text = " ".join(task.split())
    return (
        not text
        or text.lower().strip(".!") in PLACEHOLDER_TASKS
        or len(text.split()) < MIN_TASK_WORDS
    )


def normalize_text(text: str) -> str:
    """Case- and whitespace-insensitive form used for de-duplication."""
    return " ".join(text.split()).casefold()


def clean_text(value) -> str:
    """A model string stripped and with inner whitespace collapsed ("" for non-strings)."""
    return " ".join(value.split()) if isinstance(value, str) else ""


def numbered(steps: Sequence[str]) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(steps, start=1))


def upstream_task(ctx: EpisodeContext) -> str:
    """The task the plan module annotated the episode under: its staging-only ``task`` row
    (the dataset's task, or one derived from the video). Without plan rows: the dataset's."""
    for row in ctx.upstream.get("plan", []):
        if row.get("style") == "task":
            return json.loads(row["content"])["task"]
    return " ".join(ctx.episode.task.split())


def upstream_subtasks(ctx: EpisodeContext) -> list[tuple[float, str]]:
    """(start timestamp, instruction) of the plan module's subtasks, in time order."""
    rows = [r for r in ctx.upstream.get("plan", []) if r.get("style") == "subtask"]
    return sorted(
        (float(r["timestamp"]), r["content"]) for r in rows if isinstance(r.get("content"), str)
    )

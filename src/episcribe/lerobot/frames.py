"""Decode episode frames by seeking, and turn them into what the model is sent.

LeRobot v3 concatenates many episodes into one mp4, so an episode may start minutes
into the file. :func:`decode_frames` seeks to the keyframe at or before the first
wanted frame and decodes forward once, picking for each wanted timestamp the decoded
frame whose presentation time is closest; it never decodes from the file start for an
episode deep in the file. The rest of the module encodes JPEGs / data URLs and burns
timestamp labels into frames and contact sheets, so the model can cite times.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import av
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageDraw, ImageFont

from episcribe.errors import DatasetError
from episcribe.lerobot.dataset import VideoSegment

log = logging.getLogger(__name__)


def decode_frames(segment: VideoSegment, timestamps: Sequence[float]) -> list[Image.Image]:
    """RGB frames at these episode-relative timestamps, in the order asked (duplicates ok).

    Video time is ``segment.from_timestamp + t``. A target no frame is near (beyond
    the end of the file, or in a gap) raises DatasetError, as does an unreadable file.
    """
    if len(timestamps) == 0:
        return []
    targets = [segment.from_timestamp + float(t) for t in timestamps]
    where = f"{segment.path} (camera {segment.camera!r})"
    try:
        with av.open(str(segment.path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{where} has no video stream")
            stream = container.streams.video[0]
            # Not "AUTO": frame threads cost more CPU per frame, and the decodes of
            # a job's cameras and episodes already run side by side in worker threads.
            stream.thread_type = "SLICE"
            rate = stream.average_rate or stream.guessed_rate
            period = 1.0 / float(rate) if rate else 1.0 / 30
            picked = _pick(container, stream, targets, period, where, timestamps)
    except DatasetError:
        raise
    except (av.FFmpegError, OSError, ValueError, _Undecodable) as exc:
        # Name the target being decoded towards when it failed (after a seek ahead, a
        # damaged tail fails there), else the first one.
        at = exc.t if isinstance(exc, _Undecodable) else min(float(t) for t in timestamps)
        cause = exc.cause if isinstance(exc, _Undecodable) else exc
        raise DatasetError(
            f"cannot decode {where} at t={at:.3f}s (episode time, video time "
            f"{segment.from_timestamp + at:.3f}s): {cause}. The file is missing, truncated or "
            "corrupt: re-download it"
        ) from None
    return picked


class _Undecodable(Exception):
    """The decoder failed while working towards the target at episode time ``t``."""

    def __init__(self, t: float, cause: Exception):
        super().__init__(t, cause)
        self.t, self.cause = t, cause


class _Decoded:
    """A decoded frame and its time; converted to RGB once, and only if picked.

    The conversion goes through one reformatter per decode: ``frame.to_image()`` sets up
    a new scaler for every frame, ~0.8 ms of CPU per 320x240 frame against ~0.25 ms,
    for the same pixels.
    """

    __slots__ = ("frame", "time", "_image", "_reformatter")

    def __init__(self, frame, time: float, reformatter: VideoReformatter):
        self.frame, self.time, self._image = frame, time, None
        self._reformatter = reformatter

    def image(self) -> Image.Image:
        if self._image is None:
            rgb = self._reformatter.reformat(self.frame, format="rgb24")
            self._image = Image.fromarray(rgb.to_ndarray())
            self.frame = self._reformatter = None  # release the decoder's buffer
        return self._image


def _pick(container, stream, targets, period, where, timestamps) -> list[Image.Image]:
    tb = stream.time_base
    rgb = VideoReformatter()
    order = sorted(range(len(targets)), key=targets.__getitem__)
    first, last = targets[order[0]], targets[order[-1]]
    half = period / 2
    # Seek to the keyframe at/before a target: every frame before that keyframe is farther
    # from the target than the keyframe itself, so the closest frame is decoded. The nudge
    # (well under half a period) keeps a target that sits on a keyframe, up to float
    # rounding, from landing on the keyframe before it and decoding a whole GOP for nothing.
    nudge = min(half / 2, 1e-3)
    seek_to = max(0.0, first + nudge)
    container.seek(int(seek_to / tb), stream=stream, backward=True, any_frame=False)

    chosen: list[_Decoded | None] = [None] * len(targets)
    decoded = seeks = 0
    j = 0  # next target, as a position in `order`
    prev: _Decoded | None = None
    # Keyframe times seen, to skip ahead: when the next target lies at least one keyframe
    # interval beyond the last keyframe, seek to it instead of decoding every frame between
    # (sparse targets, e.g. 1 Hz ticks in a 30 fps video, decode a fraction of the frames).
    # Every frame is still decoded from its own GOP's keyframe, as the first target's is.
    key_times: list[float] = []
    resought, skip_ahead, left_at = False, True, 0.0
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames, None)
        except av.FFmpegError as exc:
            raise _Undecodable(float(timestamps[order[min(j, len(order) - 1)]]), exc) from None
        if frame is None:
            break
        if frame.pts is None:
            continue
        decoded += 1
        current = _Decoded(frame, float(frame.pts * tb), rgb)
        if resought:
            resought = False
            if current.time > seek_to + 1e-6:
                # Landed after the seek point: the frame before it might be the closest one.
                container.seek(0, stream=stream, backward=True, any_frame=False)
                return _pick_from_start(container, stream, targets, period, where, timestamps)
            if current.time <= left_at:
                # No keyframe where the interval promised one (irregular GOPs): this seek
                # went back; decode straight through from here on.
                skip_ahead = False
        if frame.key_frame and (not key_times or current.time > key_times[-1]):
            key_times.append(current.time)
        if seeks == 0 and prev is None and current.time > first + half and seek_to > 0:
            # The demuxer landed after the target (a broken index): decode from the start.
            log.warning(
                "%s: seeking to %.3fs landed at %.3fs; decoding from the start of the file",
                where,
                first,
                current.time,
            )
            container.seek(0, stream=stream, backward=True, any_frame=False)
            return _pick_from_start(container, stream, targets, period, where, timestamps)
        while j < len(order) and targets[order[j]] <= current.time:
            target = targets[order[j]]
            closer_prev = prev is not None and target - prev.time < current.time - target
            chosen[order[j]] = prev if closer_prev else current
            chosen[order[j]].image()
            j += 1
        prev = current
        if j == len(order) or current.time > last + half:
            break
        if skip_ahead and len(key_times) >= 2 and targets[order[j]] > current.time + period:
            interval = key_times[-1] - key_times[-2]
            ahead = targets[order[j]] + nudge
            if interval > 0 and ahead >= key_times[-1] + interval and ahead > current.time:
                seek_to = ahead
                container.seek(int(seek_to / tb), stream=stream, backward=True, any_frame=False)
                frames = container.decode(stream)
                prev, resought, seeks, left_at = None, True, seeks + 1, current.time
    while j < len(order):  # targets after the last decoded frame
        chosen[order[j]] = prev
        j += 1
    log.debug("%s: decoded %d frames, %d seeks, for %d targets", where, decoded, seeks, len(order))
    return _images(chosen, targets, period, where, timestamps)


def _pick_from_start(container, stream, targets, period, where, timestamps):
    tb = stream.time_base
    rgb = VideoReformatter()
    best: list[_Decoded | None] = [None] * len(targets)
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        current = _Decoded(frame, float(frame.pts * tb), rgb)
        for k, target in enumerate(targets):
            if best[k] is None or abs(current.time - target) < abs(best[k].time - target):
                best[k] = current
        if current.time > max(targets) + period:
            break
    return _images(best, targets, period, where, timestamps)


def _images(chosen, targets, period, where, timestamps) -> list[Image.Image]:
    # A frame more than one period away is not "the frame at t" (past the end, a gap).
    tolerance = period + 1e-4
    seen: set[int] = set()
    out = []
    for k, pick in enumerate(chosen):
        if pick is None or abs(pick.time - targets[k]) > tolerance:
            near = "no frame at all" if pick is None else f"the nearest is at {pick.time:.3f}s"
            raise DatasetError(
                f"{where}: no frame near t={float(timestamps[k]):.3f}s (video time "
                f"{targets[k]:.3f}s; {near}). The video is shorter than the episode's "
                "timestamps say: it may be truncated, or meta/episodes' from_timestamp is wrong"
            )
        image = pick.image()
        out.append(image.copy() if id(pick) in seen else image)  # duplicates are independent
        seen.add(id(pick))
    return out


# -- what the model is sent ---------------------------------------------------------
def encode_jpeg(image: Image.Image, max_side: int = 768, quality: int = 85) -> bytes:
    """JPEG bytes, downscaled (aspect kept) so the longer side is at most ``max_side``."""
    if image.mode != "RGB":
        image = image.convert("RGB")  # save() never changes the image: no copy needed
    w, h = image.size
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def jpeg_data_url(image: Image.Image, max_side: int = 768, quality: int = 85) -> str:
    data = base64.b64encode(encode_jpeg(image, max_side, quality)).decode("ascii")
    return f"data:image/jpeg;base64,{data}"


def encode_mp4(images: Sequence[Image.Image], fps: float, max_side: int = 768) -> bytes:
    """An H.264 mp4 of ``images`` at ``fps`` (PyAV, in memory), longer side <= ``max_side``.

    yuv420p, the pixel format every decoder plays, needs even sides: the size is rounded
    down to them.
    """
    from fractions import Fraction

    w, h = images[0].size
    scale = min(1.0, max_side / max(w, h))
    width, height = (max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for image in images:
            frame = av.VideoFrame.from_image(image.convert("RGB").resize((width, height)))
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def mp4_data_url(images: Sequence[Image.Image], fps: float, max_side: int = 768) -> str:
    data = base64.b64encode(encode_mp4(images, fps, max_side)).decode("ascii")
    return f"data:video/mp4;base64,{data}"


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def burn_label(image: Image.Image, text: str) -> Image.Image:
    """A copy of ``image`` with ``text`` in white on a dark box in the top-left corner."""
    out = image.convert("RGB")  # always a new image
    w, h = out.size
    size = max(10, min(h // 10, w // 12, 48))
    font = _font(size)
    draw = ImageDraw.Draw(out)
    pad = max(2, size // 5)
    left, top, right, bottom = draw.textbbox((pad, pad), text, font=font)
    draw.rectangle((0, 0, right + pad, bottom + pad), fill=(0, 0, 0))
    draw.text((pad, pad), text, font=font, fill=(255, 255, 255))
    return out


def contact_sheet(
    images: Sequence[Image.Image], labels: Sequence[str], columns: int | None = None
) -> Image.Image:
    """One image: a grid of tiles (size of the first image), each with its label burned in."""
    if len(images) == 0:
        raise ValueError("contact_sheet needs at least one image")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    columns = columns or math.ceil(math.sqrt(len(images)))
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    tw, th = images[0].size
    sheet = Image.new("RGB", (columns * tw, rows * th), (0, 0, 0))
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        tile = image if image.size == (tw, th) else image.resize((tw, th), Image.Resampling.LANCZOS)
        sheet.paste(burn_label(tile, label), ((k % columns) * tw, (k // columns) * th))
    return sheet


@dataclass(frozen=True)
class SheetGrid:
    """How frames are packed into contact sheets: ``columns`` x ``rows`` tiles a sheet,
    each tile's longer side ``tile_width`` px, JPEG at ``quality``.

    A sheet is sent at the size it is built (no further downscaling): the timestamp burned
    into each tile is sized to the tile (``burn_label``: a tenth of its height), so it stays
    legible to the model as drawn.
    """

    columns: int
    rows: int
    tile_width: int
    quality: int = 85

    @property
    def tiles(self) -> int:
        return self.columns * self.rows

    def tile_size(self, width: int, height: int) -> tuple[int, int]:
        """A frame of ``width`` x ``height`` scaled so its longer side is ``tile_width``."""
        scale = self.tile_width / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def largest(self) -> tuple[int, int]:
        """The largest sheet of any frame shape (square tiles): what sizing must allow."""
        return self.columns * self.tile_width, self.rows * self.tile_width

    def sheets(self, images: Sequence[Image.Image], labels: Sequence[str]) -> list[Image.Image]:
        """Consecutive frames packed into sheets of this grid, each tile labelled; the last
        sheet has only the rows it fills."""
        size = self.tile_size(*images[0].size)
        tiles = [im.resize(size, Image.Resampling.LANCZOS) for im in images]
        return [
            contact_sheet(tiles[i : i + self.tiles], labels[i : i + self.tiles], self.columns)
            for i in range(0, len(tiles), self.tiles)
        ]

    def blank(self, width: int, height: int, tiles: int) -> Image.Image:
        """A plain grey sheet the size of ``tiles`` frames of ``width`` x ``height``."""
        tw, th = self.tile_size(width, height)
        columns = min(self.columns, tiles)
        rows = math.ceil(tiles / columns)
        return Image.new("RGB", (columns * tw, rows * th), (128, 128, 128))

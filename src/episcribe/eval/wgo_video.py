"""A WGO row's MP4 -> the imported dataset's H.264 file: one frame rate, one frame size.

A LeRobot dataset has one fps and one shape per camera, and the benchmark's families do
not share either. Each video is re-encoded with PyAV at the dataset's rate: the frame
shown at each output time is the latest source frame at or before it, so every second
stays where it was (gold times stay valid). A video of another size is scaled to fit the
dataset's frame size and padded with black (letterboxed): its aspect ratio is kept, so
the model sees undistorted objects.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


class BadVideo(Exception):
    """The row's video cannot be used (the message says why)."""


def video_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the first video stream, from the header only; None if unreadable."""
    try:
        with av.open(io.BytesIO(data)) as src:
            if not src.streams.video:
                return None
            stream = src.streams.video[0]
            return stream.width, stream.height
    except (av.error.FFmpegError, ValueError, OSError):
        return None


def reencode(
    data: bytes, fps: float, path: Path, size: tuple[int, int], row_fps: float | None
) -> int:
    """The video as H.264 at ``fps`` and ``size`` (even sides) into ``path``; frames written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    period = 1 / rate
    width, height = size
    written = 0
    try:
        with av.open(io.BytesIO(data)) as src, av.open(str(path), "w", format="mp4") as dst:
            if not src.streams.video:
                raise BadVideo("the mp4 has no video stream")
            stream = src.streams.video[0]
            out = dst.add_stream("libx264", rate=rate, options={"preset": "veryfast"})
            out.width, out.height, out.pix_fmt = width, height, "yuv420p"
            out.time_base = period
            out.codec_context.gop_size = max(2, round(2 * fps))
            src_rate = float(row_fps or stream.average_rate or fps)

            def put(frame: av.VideoFrame) -> None:
                nonlocal written
                image = _fitted(frame, size)
                image.pts = written
                image.time_base = period  # else the source's time base would stay with it
                dst.mux(out.encode(image))
                written += 1

            held, last = None, 0.0
            for t, frame in _timed(src.decode(stream), src_rate):
                while held is not None and written / fps < t - 1e-6:
                    put(held)  # the held frame is shown at every output time before t
                held, last = frame, t
            if held is None:
                raise BadVideo("the video holds no frame")
            while written / fps < last + 1 / src_rate - 1e-6:  # the last frame's period
                put(held)
            dst.mux(out.encode(None))
    except BadVideo:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise BadVideo(f"the video cannot be decoded ({type(exc).__name__}: {exc})") from None
    return written


def _timed(frames: Iterator[av.VideoFrame], rate: float) -> Iterator[tuple[float, av.VideoFrame]]:
    """(seconds from the first frame, frame): gold counts from the video's first frame."""
    t0 = None
    for k, frame in enumerate(frames):
        t = frame.time if frame.time is not None else k / rate
        t0 = t if t0 is None else t0
        yield t - t0, frame


def _fitted(frame: av.VideoFrame, size: tuple[int, int]) -> av.VideoFrame:
    width, height = size
    if (frame.width, frame.height) == size:
        return frame.reformat(format="yuv420p")
    scale = min(width / frame.width, height / frame.height)
    inner = (max(2, round(frame.width * scale)), max(2, round(frame.height * scale)))
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    picture = frame.to_image().resize(inner, Image.Resampling.BILINEAR)
    x, y = (width - inner[0]) // 2, (height - inner[1]) // 2
    canvas[y : y + inner[1], x : x + inner[0]] = np.asarray(picture)
    return av.VideoFrame.from_ndarray(canvas, format="rgb24").reformat(format="yuv420p")

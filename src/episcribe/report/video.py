"""Frames for the report, cheaply: one decode per frame where a keyframe will do.

A frame in the middle of a GOP costs a decode of every frame from its keyframe (30 on
average at a 2-s GOP and 30 fps); a keyframe costs one. So:

* the timeline's strip wants *a* frame in each slice of the episode: it takes the
  keyframe at or before the slice centre when that keyframe lies in the slice;
* an overlay panel needs the exact frame of its VQA pair (the boxes belong to it), so
  :func:`~episcribe.report.overlays.pick_vqa` prefers pairs whose frame is a keyframe,
  which a seek and one demuxed packet tell (:meth:`Clip.is_keyframe`).

Every other frame comes from :func:`episcribe.lerobot.frames.decode_frames` (one pass per call,
targets sorted). A frame that cannot be had is ``None`` (drawn as a placeholder) and
logged; the report never fails on a video.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import av
from av.video.reformatter import VideoReformatter
from PIL import Image

from episcribe.errors import UserError
from episcribe.lerobot.dataset import VideoSegment
from episcribe.lerobot.frames import decode_frames

log = logging.getLogger(__name__)

VIDEO_ERRORS = (av.FFmpegError, OSError, ValueError, StopIteration, IndexError)


class Clip:
    """One camera's video of one episode, open for seeks; times are episode times."""

    def __init__(self, segment: VideoSegment):
        self.segment = segment
        self._container = None
        self._keys: dict[float, float | None] = {}
        self.grabs = 0
        self.period = 1.0 / 30
        # One converter for all frames: frame.to_image() sets up a new swscale context
        # for every frame, which costs more than decoding it.
        self._rgb = VideoReformatter()
        try:
            self._container = av.open(str(segment.path))
            self._stream = self._container.streams.video[0]
            # One frame per seek: decoder threads only add start-up and frame delay.
            self._stream.thread_count = 1
            self._tb = self._stream.time_base
            rate = self._stream.average_rate or self._stream.guessed_rate
            if rate:
                self.period = 1.0 / float(rate)
        except VIDEO_ERRORS as exc:
            self.close()
            log.warning("%s: cannot open for seeking: %s", segment.path, exc)

    def __enter__(self) -> Clip:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _seek(self, t: float) -> None:
        pts = int((self.segment.from_timestamp + t) / self._tb)
        self._container.seek(max(pts, 0), stream=self._stream, backward=True, any_frame=False)

    def keyframe_before(self, t: float) -> float | None:
        """The time of the keyframe at or before ``t`` (from one packet, nothing decoded)."""
        if self._container is None:
            return None
        key = round(t, 6)
        if key not in self._keys:
            found = None
            try:
                self._seek(t)
                for packet in self._container.demux(self._stream):
                    if packet.pts is not None:
                        found = float(packet.pts * self._tb) - self.segment.from_timestamp
                        break
            except VIDEO_ERRORS:
                found = None
            self._keys[key] = found
        return self._keys[key]

    def is_keyframe(self, t: float) -> bool:
        """Whether the frame at ``t`` is a keyframe (decodable on its own)."""
        found = self.keyframe_before(t)
        return found is not None and abs(found - t) <= self.period / 2

    def grab(
        self, t: float, size: tuple[int, int] | None = None
    ) -> tuple[float, Image.Image] | None:
        """The keyframe at or before ``t``, decoded: (its time, the image), or None.

        With ``size``, the image is scaled to it in the same swscale pass (area average).
        """
        if self._container is None:
            return None
        self.grabs += 1
        try:
            self._seek(t)
            for frame in self._container.decode(self._stream):
                if frame.pts is not None:
                    time = float(frame.pts * self._tb) - self.segment.from_timestamp
                    self._keys.setdefault(round(t, 6), time)
                    if size is None:
                        rgb = self._rgb.reformat(frame, format="rgb24")
                    else:
                        w, h = size
                        rgb = self._rgb.reformat(
                            frame, width=w, height=h, format="rgb24", interpolation="AREA"
                        )
                    return time, rgb.to_image()
        except VIDEO_ERRORS as exc:
            log.debug("%s: no keyframe before t=%.3f: %s", self.segment.path, t, exc)
        return None


def exact_frames(segment: VideoSegment, times: Sequence[float]) -> list[Image.Image | None]:
    """The frames at these episode times (episcribe.lerobot.frames), or Nones and a warning."""
    if not times:
        return []
    try:
        return list(decode_frames(segment, times))
    except UserError as exc:
        log.warning("%s (camera %s): frames unavailable: %s", segment.path, segment.camera, exc)
        return [None] * len(times)


def strip_frames(
    clip: Clip,
    slices: Sequence[tuple[float, float]],
    centres: Sequence[float],
    size: tuple[int, int] | None = None,
) -> list[tuple[float, Image.Image | None]]:
    """A frame in each slice: a keyframe in the slice if there is one (the last one at or
    before the centre, else the last one before the end), else the centre's own frame.
    Returns (time, image or None) per slice, times increasing; keyframes come at ``size``
    if given (thumbnails), the others at full size."""
    out: list[tuple[float, Image.Image | None] | None] = []
    half = clip.period / 2
    last = float("-inf")
    for (start, end), centre in zip(slices, centres, strict=True):
        lo = max(start - half, last + half)  # in the slice, and not the previous frame
        got = None
        for probe in (centre, end - half):  # probes read one packet, decode nothing
            key = clip.keyframe_before(probe)
            if key is not None and lo <= key < end:
                got = clip.grab(key, size)
                break
            if key is None or key >= lo:
                break
        if got is not None and lo <= got[0] < end:
            out.append(got)
            last = got[0]
        else:
            out.append(None)
    missing = [k for k, item in enumerate(out) if item is None]
    images = exact_frames(clip.segment, [centres[k] for k in missing])
    for k, image in zip(missing, images, strict=True):
        out[k] = (centres[k], image)
    return out  # type: ignore[return-value]


def panel_frames(
    clip: Clip, times: Sequence[float], size: tuple[int, int] | None = None
) -> list[Image.Image | None]:
    """The exact frame at each time: keyframes by a seek (at ``size`` if given), the rest
    in one decoding pass (full size)."""
    out: list[Image.Image | None] = [None] * len(times)
    rest = []
    for k, t in enumerate(times):
        got = clip.grab(t, size) if clip.is_keyframe(t) else None
        if got is not None and abs(got[0] - t) <= clip.period / 2:
            out[k] = got[1]
        else:
            rest.append(k)
    for k, image in zip(rest, exact_frames(clip.segment, [times[k] for k in rest]), strict=True):
        out[k] = image
    return out

"""Frames whose events would not all reach training, found from the rows as written.

LeRobot's recipes train one sub-recipe per frame and route VQA first: on a frame with a
VQA pair and a spoken exchange (an interjection with the robot's reply, or a reply alone)
only the VQA pair is trained, and a frame with VQA pairs of two cameras needs a recipe
with one VQA binding per camera (LeRobot's default binds none, and raises). The modules
place events apart (``modules.placement``); this finds any frame where they still meet,
for the validator's warnings and the report's count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from episcribe.lerobot.language import is_speech_atom

# Every warning about a shared frame starts so (the report counts them by it).
SHARED_FRAME = "frame shares events"


@dataclass(frozen=True)
class FrameEvents:
    vqa_cameras: tuple[str, ...]  # cameras with a VQA row on the frame
    speech: bool  # a spoken reply (speech atom) or an interjection

    @property
    def shared(self) -> bool:
        return len(self.vqa_cameras) > 1 or bool(self.vqa_cameras and self.speech)


def frame_events(rows: Iterable[Mapping]) -> dict[float, FrameEvents]:
    """The events of each timestamp that carries any (event rows; others are ignored)."""
    cameras: dict[float, set[str]] = defaultdict(set)
    speech: set[float] = set()
    for row in rows:
        ts = row["timestamp"]
        if row.get("style") == "vqa" and row.get("camera"):
            cameras[ts].add(row["camera"])
        elif row.get("style") == "interjection" or is_speech_atom(row):
            speech.add(ts)
    return {
        ts: FrameEvents(tuple(sorted(cameras.get(ts, ()))), ts in speech)
        for ts in sorted({*cameras, *speech})
    }


def shared_frame_message(events: FrameEvents, frame: int | None) -> str:
    """One warning line for a frame whose events are not all trained."""
    where = f"{SHARED_FRAME} (frame {frame})" if frame is not None else SHARED_FRAME
    if events.speech:
        return (
            f"{where}: a VQA pair ({', '.join(events.vqa_cameras)}) beside a spoken "
            "exchange; LeRobot's recipes train only the VQA pair there"
        )
    return (
        f"{where}: VQA pairs of {len(events.vqa_cameras)} cameras "
        f"({', '.join(events.vqa_cameras)}); a recipe needs one VQA binding per camera"
    )

"""WGO-format parquet fixtures: synthetic videos of given durations with our own gold.

Same columns as WGO-Bench (``id``, ``video`` MP4 bytes, ``instruction``, ``segments``,
``metadata`` JSON string); nothing of the benchmark itself (CC-BY-NC-SA) is used. Each
video shows a plain colour per gold segment, so the frames change where the gold does.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COLORS = [(200, 60, 60), (60, 180, 80), (60, 90, 210), (230, 200, 50), (150, 80, 180)]


@dataclass
class Row:
    id: str
    seconds: float
    segments: list[tuple[float, float, str]]
    instruction: str = "Put the red block into the blue bowl"
    family: str = "droid"
    fps: int = 10
    size: tuple[int, int] = (96, 64)
    video: bytes | None = field(default=None, repr=False)  # given: used as is


def mp4(seconds: float, fps: int, size: tuple[int, int], cuts: list[float]) -> bytes:
    """H.264 MP4 bytes of ``round(seconds * fps)`` frames; the colour changes at ``cuts``."""
    buf = io.BytesIO()
    width, height = size
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i in range(round(seconds * fps)):
            part = sum(1 for c in cuts if i / fps >= c)
            image = np.zeros((height, width, 3), dtype=np.uint8)
            image[:] = COLORS[part % len(COLORS)]
            image[: height // 4, : (i * width) // max(1, round(seconds * fps))] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buf.getvalue()


def write_wgo(path: Path, rows: list[Row]) -> Path:
    records = []
    for row in rows:
        cuts = [start for start, _, _ in row.segments[1:]]
        video = row.video if row.video is not None else mp4(row.seconds, row.fps, row.size, cuts)
        meta = {
            "source_family": row.family,
            "source_dataset": f"{row.family}_synthetic",
            "fps": row.fps,
            "duration_sec": row.seconds,
            "num_frames": round(row.seconds * row.fps),
        }
        records.append(
            {
                "id": row.id,
                "video": video,
                "instruction": row.instruction,
                "segments": [
                    {"start_sec": a, "end_sec": b, "subtask": label} for a, b, label in row.segments
                ],
                "metadata": json.dumps(meta),
            }
        )
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("video", pa.binary()),
            ("instruction", pa.string()),
            (
                "segments",
                pa.list_(
                    pa.struct(
                        [("start_sec", pa.float64()), ("end_sec", pa.float64()),
                         ("subtask", pa.string())]
                    )
                ),
            ),
            ("metadata", pa.string()),
        ]
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records, schema=schema), path)
    return path


# Gap-free gold on whole 0.1 s (frames at 10 fps), every subtask >= 1 s, <= 8 per
# episode, distinct durations: what a perfect model's answer survives stitching with.
FIXTURE = [
    Row(
        "droid_a",
        6.0,
        [(0.0, 2.0, "reach for the red block"), (2.0, 4.0, "grasp the red block"),
         (4.0, 6.0, "place the block in the bowl")],
    ),
    Row(
        "droid_b",
        7.0,
        [(0.0, 1.5, "open the drawer"), (1.5, 4.5, "pick up the sponge"),
         (4.5, 7.0, "put the sponge in the drawer")],
        instruction="Put the sponge into the drawer",
    ),
    Row(
        "galaxea_a",
        8.0,
        [(0.0, 3.0, "lift the lid"), (3.0, 5.0, "take out the cup"),
         (5.0, 6.5, "set the cup down"), (6.5, 8.0, "close the lid")],
        instruction="Take the cup out of the box",
        family="galaxea",
    ),
    Row(
        "homer_a",
        5.0,
        [(0.0, 2.5, "wipe the table"), (2.5, 5.0, "hang up the towel")],
        instruction="Clean the table with the towel",
        family="homer",
    ),
]  # fmt: skip

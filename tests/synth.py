"""Deterministic synthetic LeRobot v3.0 datasets for tests, the demo and benchmarks.

The layout mirrors a real dataset (g1_bottle): ``meta/info.json``, ``meta/tasks.parquet``,
``meta/episodes/chunk-000/file-000.parquet``, several episodes per data shard and per
mp4 file, episodes concatenated back to back inside each video with their
``from_timestamp``/``to_timestamp`` read back from the muxed packets' pts, float32
timestamps (``frame_index / fps`` computed in float32), real H.264/HEVC/AV1 video with a
moderate GOP so that seeking matters.

Each frame shows a few coloured shapes moving smoothly over a table (deterministic from
``seed``, episode and camera), and a black/white code strip along the bottom edge: 16
blocks holding the episode index (high 6 bits) and the frame index within the episode
(low 10 bits). :func:`read_frame_code` reads it back, so tests can check that a decoded
frame is the frame they asked for.

The robot is an SO-101-like arm (``shoulder_pan.pos ... gripper.pos``) whose state and
action follow one script per episode (``synth_robot.signal_script``): rest, reach, grasp, carry,
release, return, rest. The video shows the same script: a claw drawn where the arm is,
its jaws as open as ``gripper.pos``, carrying a grey block between grasp and release.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from synth_robot import STATE_NAMES, draw_robot, seeded_rng, signal_script

DEFAULT_TASKS = (
    "Pick up the red block and place it in the blue bowl.",
    "Pick up the green cube and put it on the yellow plate.",
)
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
ENCODERS = {
    "h264": ("libx264", {"preset": "veryfast", "tune": "zerolatency"}),
    "hevc": ("libx265", {"preset": "ultrafast", "x265-params": "log-level=none"}),
    # Preset 10 sometimes left a frame's code strip as the reference frame's (a skipped
    # block) once the claw moved; preset 8 reads back right on every frame tried.
    "av1": ("libsvtav1", {"preset": "8"}),
}
CODE_BITS = 16  # 6 bits of episode index, 10 bits of frame index
CODE_ROWS = 10  # height of the code strip in pixels


@contextmanager
def _scheduling_kept():
    """Run with the calling thread's scheduling put back after. SVT-AV1, run as root,
    makes the process real-time (SCHED_FIFO 99); every process a test starts after that
    inherits it, and two busy ones (a browser and its driver) then starve the rest of the
    machine for good."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        os.sched_setscheduler(0, policy, param)


def make_dataset(
    root: str | Path,
    *,
    episodes: int = 6,
    seconds: float = 4.0,
    fps: int = 10,
    cameras: Sequence[str] = ("observation.images.top", "observation.images.wrist"),
    episodes_per_file: int = 4,
    size: tuple[int, int] = (160, 120),
    codec: str = "h264",
    seed: int = 0,
    tasks: Sequence[str | Sequence[str]] | None = None,
    codebase_version: str = "v3.0",
    depth_cameras: Sequence[str] = (),
) -> Path:
    """Write a synthetic dataset at ``root`` (which must not exist or be empty); return it.

    ``tasks[e % len(tasks)]`` is episode ``e``'s task: a string, or a list of strings
    (an empty list gives an episode with no task). ``size`` is (width, height).
    ``depth_cameras`` are more video streams, marked ``video.is_depth_map`` as LeRobot
    marks a depth camera's, at half the size (so their frames are told apart by size).
    """
    if codec not in ENCODERS:
        raise ValueError(f"codec must be one of {sorted(ENCODERS)}, got {codec!r}")
    if episodes < 1 or episodes_per_file < 1 or seconds <= 0 or fps <= 0:
        raise ValueError("episodes, episodes_per_file, seconds and fps must be positive")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty; remove it first")
    width, height = size
    n_frames = max(1, round(seconds * fps))
    ep_tasks = _episode_tasks(episodes, tasks)
    task_list = list(dict.fromkeys(t for ts in ep_tasks for t in ts))
    task_index = {t: i for i, t in enumerate(task_list)}

    # Build beside the target and rename at the end: a crash leaves no half dataset.
    work = root.with_name(f".{root.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        groups = [
            list(range(s, min(s + episodes_per_file, episodes)))
            for s in range(0, episodes, episodes_per_file)
        ]
        ep_rows: dict[int, dict] = {}
        global_index = 0
        for file_index, group in enumerate(groups):
            tables = []
            for ep in group:
                first_task = ep_tasks[ep][0] if ep_tasks[ep] else None
                tables.append(
                    _episode_table(
                        ep, n_frames, fps, seed, global_index, task_index.get(first_task, -1)
                    )
                )
                ep_rows[ep] = {
                    "episode_index": ep,
                    "tasks": list(ep_tasks[ep]),
                    "length": n_frames,
                    "data/chunk_index": 0,
                    "data/file_index": file_index,
                    "dataset_from_index": global_index,
                    "dataset_to_index": global_index + n_frames,
                }
                global_index += n_frames
            path = work / DATA_PATH.format(chunk_index=0, file_index=file_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(tables), path)
            for cam_no, cam in enumerate([*cameras, *depth_cameras]):
                path = work / VIDEO_PATH.format(video_key=cam, chunk_index=0, file_index=file_index)
                cam_size = (width // 2, height // 2) if cam in depth_cameras else (width, height)
                spans = _write_video(path, group, n_frames, fps, cam_size, codec, seed, cam_no)
                for ep, (t0, t1) in zip(group, spans, strict=True):
                    ep_rows[ep].update(
                        {
                            f"videos/{cam}/chunk_index": 0,
                            f"videos/{cam}/file_index": file_index,
                            f"videos/{cam}/from_timestamp": t0,
                            f"videos/{cam}/to_timestamp": t1,
                        }
                    )
        for row in ep_rows.values():
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
        _write_meta(
            work,
            [ep_rows[e] for e in range(episodes)],
            task_list,
            cameras,
            depth_cameras,
            fps,
            size,
            codec,
            codebase_version,
            global_index,
        )
        if root.exists():
            root.rmdir()
        root.parent.mkdir(parents=True, exist_ok=True)
        work.rename(root)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return root


def _episode_tasks(episodes: int, tasks) -> list[tuple[str, ...]]:
    tasks = DEFAULT_TASKS if tasks is None else tasks
    if len(tasks) == 0:
        return [() for _ in range(episodes)]
    out = []
    for e in range(episodes):
        t = tasks[e % len(tasks)]
        out.append((t,) if isinstance(t, str) else tuple(t))
    return out


def _episode_table(ep, n_frames, fps, seed, start_index, task_idx) -> pa.Table:
    frame = np.arange(n_frames, dtype=np.int64)
    timestamp = frame.astype(np.float32) / np.float32(fps)
    state = signal_script(ep, n_frames, fps, seed).state
    action = np.roll(state, -1, axis=0)  # the command leads the measured state by a frame
    action[-1] = state[-1]
    dim = len(STATE_NAMES)

    def vectors(arr: np.ndarray) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), pa.float32()), dim)

    return pa.table(
        {
            "observation.state": vectors(state),
            "action": vectors(action),
            "timestamp": pa.array(timestamp, pa.float32()),
            "frame_index": pa.array(frame),
            "episode_index": pa.array(np.full(n_frames, ep, dtype=np.int64)),
            "index": pa.array(start_index + frame),
            "task_index": pa.array(np.full(n_frames, task_idx, dtype=np.int64)),
        }
    )


class _Scene:
    """A few shapes moving smoothly over a table, fixed by (seed, episode, camera)."""

    COLORS = np.array([[220, 40, 40], [40, 180, 60], [50, 80, 220], [240, 200, 40]], dtype=np.uint8)

    def __init__(self, seed: int, ep: int, cam_no: int, size: tuple[int, int]):
        self.w, self.h = size
        rng = seeded_rng(seed, "scene", ep, cam_no)
        self.bg = np.array(
            [[150, 120, 90], [110, 110, 120], [90, 130, 100]][cam_no % 3], dtype=np.uint8
        )
        n = 3
        self.colors = self.COLORS[rng.permutation(len(self.COLORS))[:n]]
        self.center = rng.uniform(0.3, 0.7, (n, 2))
        self.amp = rng.uniform(0.1, 0.25, (n, 2))
        self.freq = rng.uniform(0.1, 0.35, (n, 2))
        self.phase = rng.uniform(0, 2 * np.pi, (n, 2))
        self.radius = rng.uniform(0.07, 0.12, n) * min(self.w, self.h)
        yy, xx = np.mgrid[0 : self.h, 0 : self.w]
        self.yy, self.xx = yy, xx
        # A static table texture: a darker band and a soft gradient.
        base = np.broadcast_to(self.bg, (self.h, self.w, 3)).astype(np.int16)
        shade = (yy[..., None] * 40 // max(self.h, 1)).astype(np.int16)
        self.base = np.clip(base - 20 + shade, 0, 255).astype(np.uint8)

    def render(self, t: float, ep: int, frame: int) -> np.ndarray:
        img = self.base.copy()
        for k in range(len(self.colors)):
            pos = self.center[k] + self.amp[k] * np.sin(
                2 * np.pi * self.freq[k] * t + self.phase[k]
            )
            cx, cy = pos[0] * self.w, pos[1] * self.h
            r = self.radius[k]
            # Only the shape's bounding box is touched: rendering stays cheap at any size.
            x0, x1 = max(0, int(cx - r)), min(self.w, int(cx + r) + 2)
            y0, y1 = max(0, int(cy - r)), min(self.h, int(cy + r) + 2)
            xx, yy = self.xx[y0:y1, x0:x1], self.yy[y0:y1, x0:x1]
            if k == 1:  # a square
                mask = (np.abs(xx - cx) < r) & (np.abs(yy - cy) < r)
            else:  # discs
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            img[y0:y1, x0:x1][mask] = self.colors[k]
        _draw_code(img, ep, frame)
        return img


def _draw_code(img: np.ndarray, ep: int, frame: int) -> None:
    h, w = img.shape[:2]
    value = ((ep & 0x3F) << 10) | (frame & 0x3FF)
    block = w // CODE_BITS
    img[h - CODE_ROWS :, :] = 0
    for bit in range(CODE_BITS):
        if value >> (CODE_BITS - 1 - bit) & 1:
            img[h - CODE_ROWS :, bit * block : (bit + 1) * block] = 255


def read_frame_code(image) -> tuple[int, int]:
    """(episode index mod 64, frame index mod 1024) read from a synthetic frame's code strip."""
    arr = np.asarray(image.convert("L") if hasattr(image, "convert") else image)
    h, w = arr.shape[:2]
    block = w // CODE_BITS
    row = arr[h - CODE_ROWS // 2 - 1]
    value = 0
    for bit in range(CODE_BITS):
        centre = row[bit * block + block // 4 : (bit + 1) * block - block // 4]
        value = (value << 1) | int(centre.mean() > 127)
    return value >> 10, value & 0x3FF


def _write_video(
    path, group, n_frames, fps, size, codec, seed, cam_no
) -> list[tuple[float, float]]:
    """Encode the group's episodes back to back; return each one's (from, to) seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name, options = ENCODERS[codec]
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole config at info level
    with _scheduling_kept(), av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(name, rate=fps, options=dict(options))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.gop_size = 2 * fps
        stream.codec_context.max_b_frames = 0
        stream.thread_type = "AUTO"
        pts = 0
        for ep in group:
            scene = _Scene(seed, ep, cam_no, size)
            script = signal_script(ep, n_frames, fps, seed)
            for f in range(n_frames):
                image = scene.render(f / fps, ep, f)
                draw_robot(image, script, f, CODE_ROWS)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = pts
                pts += 1
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    # Read the episode boundaries back from the muxed packets, as LeRobot records them.
    with av.open(str(path)) as container:
        vs = container.streams.video[0]
        times = sorted(p.pts for p in container.demux(vs) if p.pts is not None)
        tb = vs.time_base
    spans = []
    for k in range(len(group)):
        first = times[k * n_frames]
        t0 = float(first * tb)
        spans.append((t0, t0 + n_frames / fps))
    return spans


def _write_meta(
    root, rows, task_list, cameras, depth_cameras, fps, size, codec, version, total_frames
) -> None:
    width, height = size
    dim = len(STATE_NAMES)
    features = {
        "observation.state": {"dtype": "float32", "shape": [dim], "names": [STATE_NAMES]},
        "action": {"dtype": "float32", "shape": [dim], "names": [STATE_NAMES]},
    }
    # depth streams first: a reader taking the first video feature would pick one
    for cam in [*depth_cameras, *cameras]:
        depth = cam in depth_cameras
        w, h = (width // 2, height // 2) if depth else (width, height)
        features[cam] = {
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channel"],
            "info": {
                "video.height": h,
                "video.width": w,
                "video.codec": codec,
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": depth,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            },
        }
    for key in ("timestamp",):
        features[key] = {"dtype": "float32", "shape": [1], "names": None}
    for key in ("frame_index", "episode_index", "index", "task_index"):
        features[key] = {"dtype": "int64", "shape": [1], "names": None}
    info = {
        "codebase_version": version,
        "robot_type": "synthetic",
        "total_episodes": len(rows),
        "total_frames": total_frames,
        "total_tasks": len(task_list),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": f"0:{len(rows)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
    }
    meta = root / "meta"
    (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    (meta / "info.json").write_text(json.dumps(info, indent=4) + "\n")
    tasks = pd.DataFrame(
        {"task_index": np.arange(len(task_list), dtype=np.int64)}, index=pd.Index(task_list)
    )
    tasks.to_parquet(meta / "tasks.parquet")
    schema = pa.schema(
        [
            ("episode_index", pa.int64()),
            ("tasks", pa.list_(pa.string())),
            ("length", pa.int64()),
            ("data/chunk_index", pa.int64()),
            ("data/file_index", pa.int64()),
            ("dataset_from_index", pa.int64()),
            ("dataset_to_index", pa.int64()),
        ]
        + [
            field
            for cam in [*cameras, *depth_cameras]
            for field in (
                (f"videos/{cam}/chunk_index", pa.int64()),
                (f"videos/{cam}/file_index", pa.int64()),
                (f"videos/{cam}/from_timestamp", pa.float64()),
                (f"videos/{cam}/to_timestamp", pa.float64()),
            )
        ]
        + [("meta/episodes/chunk_index", pa.int64()), ("meta/episodes/file_index", pa.int64())]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, meta / "episodes" / "chunk-000" / "file-000.parquet")

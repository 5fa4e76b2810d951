"""WGO-Bench ("What's Going On") -> a LeRobot v3 dataset the workflow annotates as it is.

The benchmark is one parquet file, a row per episode: ``id``, ``video`` (the episode's MP4
as bytes, or a struct holding them), ``instruction`` (sometimes empty), ``segments`` (a
list of ``{start_sec, end_sec, subtask}``, seconds from the video's start) and
``metadata`` (a JSON string: ``source_family``, ``fps``, ...).

The import writes, in the output directory:

- ``wgo_bench/``: LeRobot v3, one camera (``observation.images.main``), one episode per
  data and video file, the instruction as the episode's task, frames at their
  ``timestamp = frame_index / fps``. Each video is re-encoded as H.264 at the dataset's
  ``fps`` (``--fps``, default the most common row fps) and frame size (the most common
  one; others letterboxed), see ``wgo_video``;
- ``gold.jsonl``: per episode ``{"episode", "id", "source_family", "duration_sec",
  "task", "segments": [{"start_sec", "end_sec", "label"}]}``;
- ``episodes.json``: episode index -> row id and source family.

A row with an undecodable video, no segments, or a segment outside its video is skipped
and named; the count is returned. WGO-Bench is CC-BY-NC-SA-4.0: keep the import out of
any repository.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from episcribe.atomic import write_json, write_text
from episcribe.errors import UserError
from episcribe.eval.wgo_video import BadVideo, reencode, video_size

CAMERA = "observation.images.main"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
REPO_ID = "macrodata/WGO-Bench"
DATASET_DIR = "wgo_bench"  # results/wgo_bench/ then holds the run
COLUMNS = ("id", "video", "instruction", "segments", "metadata")
# A last segment may end up to this far past the last frame (annotators mark the end of
# the video); further out, the row does not describe its video.
END_SLACK_S = 0.5


class WgoError(UserError):
    """A WGO-format file that cannot be imported."""


@dataclass
class Imported:
    dataset: Path
    gold: Path
    episodes: int
    skipped: list[str]  # "row <id>: why", one per skipped row


def download(repo_id: str, revision: str | None, dest: Path) -> list[Path]:
    """The benchmark's parquet files, fetched with huggingface_hub into ``dest`` (once)."""
    from huggingface_hub import snapshot_download

    from episcribe.lerobot.hub import hub_error

    try:
        snapshot_download(
            repo_id=repo_id,
            repo_type="dataset",
            revision=revision or "main",
            local_dir=dest,
            allow_patterns=["*.parquet", "**/*.parquet"],
        )
    except Exception as exc:
        raise hub_error(exc, repo_id, "download", revision) from None
    files = sorted(p for p in dest.rglob("*.parquet") if ".cache" not in p.parts)
    if not files:
        raise WgoError(f"Hub dataset {repo_id} holds no parquet file: is it WGO-Bench?")
    return files


def import_wgo(sources: list[Path], out: Path, fps: float | None = None) -> Imported:
    """Write ``out/wgo_bench``, ``out/gold.jsonl`` and ``out/episodes.json`` from WGO rows."""
    for path in sources:
        _check_columns(path)
    fps = fps or _common_fps(sources)
    size = _common_size(sources)
    dataset = out / DATASET_DIR
    if dataset.exists():
        raise WgoError(f"{dataset} exists; remove it (or choose another --out) to import again")
    work = dataset.with_name(f".dataset.tmp-{uuid.uuid4().hex[:8]}")
    skipped: list[str] = []
    gold: list[dict] = []
    episodes: list[dict] = []
    tasks: list[str] = []
    total = 0
    try:
        for row in _rows(sources):
            ep = len(episodes)
            try:
                item = _episode(row, ep, fps, size, work, total)
            except (_BadRow, BadVideo) as exc:
                skipped.append(f"row {row.get('id')!r}: {exc}")
                continue
            task = item["task"]
            if task and task not in tasks:
                tasks.append(task)
            item["meta"]["tasks"] = [task] if task else []
            _write_frames(work, ep, item["frames"], fps, total, tasks.index(task) if task else -1)
            total += item["frames"]
            episodes.append(item["meta"])
            gold.append(item["gold"])
        if not episodes:
            raise WgoError(
                f"no row of {', '.join(map(str, sources))} could be imported "
                f"({len(skipped)} skipped: {'; '.join(skipped[:3])})"
            )
        _write_meta(work, episodes, tasks, fps, size, total)
        dataset.parent.mkdir(parents=True, exist_ok=True)
        work.rename(dataset)
    finally:
        if work.exists():
            shutil.rmtree(work)
    gold_path = out / "gold.jsonl"
    write_text(gold_path, "".join(json.dumps(g, sort_keys=True) + "\n" for g in gold))
    write_json(
        out / "episodes.json",
        {str(g["episode"]): {"id": g["id"], "source_family": g["source_family"]} for g in gold},
    )
    return Imported(dataset, gold_path, len(episodes), skipped)


class _BadRow(Exception):
    pass


def _check_columns(path: Path) -> None:
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        raise WgoError(f"{path} is not a readable parquet file: {exc}") from None
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise WgoError(
            f"{path} lacks column(s) {', '.join(missing)}: not a WGO-format file "
            f"(expected {', '.join(COLUMNS)})"
        )


def _rows(sources: list[Path]) -> Iterator[dict]:
    """Rows one at a time: the videos of the whole file need not fit in memory."""
    for path in sources:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1, columns=list(COLUMNS)):
            yield from batch.to_pylist()


def _metadata(row: dict) -> dict:
    try:
        value = json.loads(row.get("metadata") or "{}")
    except (TypeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _common_fps(sources: list[Path]) -> float:
    rates: Counter = Counter()
    for path in sources:
        for text in pq.read_table(path, columns=["metadata"]).column("metadata").to_pylist():
            fps = _metadata({"metadata": text}).get("fps")
            if isinstance(fps, int | float) and fps > 0:
                rates[float(fps)] += 1
    if not rates:
        raise WgoError("no row's metadata gives an fps: pass --fps")
    return rates.most_common(1)[0][0]


def _common_size(sources: list[Path]) -> tuple[int, int]:
    """The most common video size (even sides): every video is letterboxed into it."""
    sizes: Counter = Counter()
    for path in sources:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1, columns=["video"]):
            video = batch.column("video")[0].as_py()
            video = video.get("bytes") if isinstance(video, dict) else video
            found = video_size(bytes(video)) if video else None
            if found:
                sizes[found] += 1
    if not sizes:
        raise WgoError(f"no video of {', '.join(map(str, sources))} can be read")
    (width, height), _ = sizes.most_common(1)[0]
    return width - width % 2, height - height % 2


def _episode(
    row: dict, ep: int, fps: float, size: tuple[int, int], root: Path, start_index: int
) -> dict:
    meta = _metadata(row)
    segments = row.get("segments") or []
    if not segments:
        raise _BadRow("no segments")
    video = row.get("video")
    if isinstance(video, dict):
        video = video.get("bytes")
    if not video:
        raise _BadRow("no video bytes")
    path = root / VIDEO_PATH.format(video_key=CAMERA, chunk_index=0, file_index=ep)
    try:
        n_frames = reencode(bytes(video), fps, path, size, meta.get("fps"))
        gold_segments = _gold_segments(segments, n_frames / fps)
    except (_BadRow, BadVideo):
        path.unlink(missing_ok=True)  # the next good row takes this episode index
        raise
    duration = n_frames / fps
    task = " ".join(str(row.get("instruction") or "").split())
    family = str(meta.get("source_family") or "unknown")
    return {
        "task": task,
        "frames": n_frames,
        "meta": {
            "episode_index": ep,
            "length": n_frames,
            "data/chunk_index": 0,
            "data/file_index": ep,
            "dataset_from_index": start_index,
            "dataset_to_index": start_index + n_frames,
            f"videos/{CAMERA}/chunk_index": 0,
            f"videos/{CAMERA}/file_index": ep,
            f"videos/{CAMERA}/from_timestamp": 0.0,
            f"videos/{CAMERA}/to_timestamp": duration,
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
        },
        "gold": {
            "episode": ep,
            "id": str(row.get("id")),
            "source_family": family,
            "duration_sec": round(duration, 3),
            "task": task,
            "segments": sorted(gold_segments, key=lambda s: (s["start_sec"], s["end_sec"])),
        },
    }


def _gold_segments(segments: list, duration: float) -> list[dict]:
    out = []
    for seg in segments:
        start, end = seg.get("start_sec"), seg.get("end_sec")
        if not (isinstance(start, int | float) and isinstance(end, int | float)) or end < start:
            raise _BadRow(f"segment {seg!r} has no valid start_sec/end_sec")
        if start < 0 or start >= duration or end > duration + END_SLACK_S:
            raise _BadRow(
                f"segment {start:.3f}-{end:.3f} s lies outside the {duration:.3f} s video"
            )
        label = str(seg.get("subtask") or seg.get("label") or "")
        out.append(
            {"start_sec": round(start, 3), "end_sec": round(min(end, duration), 3), "label": label}
        )
    return out


def _write_frames(root: Path, ep: int, n: int, fps: float, start: int, task_index: int) -> None:
    frame = np.arange(n, dtype=np.int64)
    table = pa.table(
        {
            "timestamp": pa.array(frame.astype(np.float32) / np.float32(fps), pa.float32()),
            "frame_index": pa.array(frame),
            "episode_index": pa.array(np.full(n, ep, dtype=np.int64)),
            "index": pa.array(start + frame),
            "task_index": pa.array(np.full(n, task_index, dtype=np.int64)),
        }
    )
    path = root / DATA_PATH.format(chunk_index=0, file_index=ep)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _write_meta(
    root: Path, episodes: list[dict], tasks: list[str], fps: float, size: tuple, total: int
) -> None:
    width, height = size
    features = {
        CAMERA: {
            "dtype": "video",
            "shape": [height, width, 3],
            "names": ["height", "width", "channel"],
            "info": {
                "video.height": height,
                "video.width": width,
                "video.codec": "h264",
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            },
        },
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    }
    for key in ("frame_index", "episode_index", "index", "task_index"):
        features[key] = {"dtype": "int64", "shape": [1], "names": None}
    info = {
        "codebase_version": "v3.0",
        "robot_type": "wgo_bench",
        "total_episodes": len(episodes),
        "total_frames": total,
        "total_tasks": len(tasks),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
    }
    meta = root / "meta"
    (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    write_json(meta / "info.json", info)
    # LeRobot reads tasks.parquet with pandas, the task strings as the index.
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "pandas_version": "2.2.0",
    }  # fmt: skip
    schema = pa.schema([("task_index", pa.int64()), ("task", pa.string())]).with_metadata(
        {b"pandas": json.dumps(pandas_meta).encode()}
    )
    pq.write_table(
        pa.table({"task_index": list(range(len(tasks))), "task": tasks}, schema=schema),
        meta / "tasks.parquet",
    )
    schema = pa.schema(
        [
            ("episode_index", pa.int64()),
            ("tasks", pa.list_(pa.string())),
            ("length", pa.int64()),
            ("data/chunk_index", pa.int64()),
            ("data/file_index", pa.int64()),
            ("dataset_from_index", pa.int64()),
            ("dataset_to_index", pa.int64()),
            (f"videos/{CAMERA}/chunk_index", pa.int64()),
            (f"videos/{CAMERA}/file_index", pa.int64()),
            (f"videos/{CAMERA}/from_timestamp", pa.float64()),
            (f"videos/{CAMERA}/to_timestamp", pa.float64()),
            ("meta/episodes/chunk_index", pa.int64()),
            ("meta/episodes/file_index", pa.int64()),
        ]
    )
    pq.write_table(
        pa.Table.from_pylist(episodes, schema=schema),
        meta / "episodes" / "chunk-000" / "file-000.parquet",
    )

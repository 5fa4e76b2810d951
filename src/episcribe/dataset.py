"""Read a local LeRobot v3.x dataset: metadata, episodes, frame timestamps, cameras.

Opening reads only ``meta/``: ``info.json`` and the episodes parquet (a few columns,
vectorised), so it stays cheap for 10,000 episodes. Frame data is read per episode by
:meth:`LeRobotDataset.load_episode`, which touches only the row groups of that
episode's own data shard. Timestamps are returned exactly as stored (float32), never
recomputed: annotation rows must land on real frame timestamps.

Every problem with the input raises :class:`~episcribe.errors.DatasetError` naming the
file, key or episode at fault and what to do about it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import DatasetError

log = logging.getLogger(__name__)

MAX_FPS = 1000.0  # far above any robot camera; a larger value is a broken info.json

V21_CONVERTER = "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30"


@dataclass(frozen=True)
class VideoSegment:
    """Where one camera's frames of one episode live: a time range inside an mp4."""

    camera: str
    path: Path
    from_timestamp: float
    to_timestamp: float
    width: int
    height: int


@dataclass(frozen=True)
class EpisodeInfo:
    """One row of ``meta/episodes``: no frame data is read to build it."""

    index: int
    tasks: tuple[str, ...]
    length: int
    data_path: Path
    videos: dict[str, VideoSegment]  # camera key -> segment


@dataclass(frozen=True, eq=False)
class Episode:
    """An episode's metadata plus its frame timestamps (float32, exactly as stored)."""

    info: EpisodeInfo
    timestamps: np.ndarray
    task: str  # the first task string ("" when the episode has none)

    @property
    def index(self) -> int:
        return self.info.index

    @property
    def duration(self) -> float:
        return float(self.timestamps[-1] - self.timestamps[0])


def _format_range(indices: np.ndarray) -> str:
    if len(indices) == 0:
        return "none (the dataset has no episodes)"
    lo, hi = int(indices.min()), int(indices.max())
    if hi - lo + 1 == len(indices):
        return f"{lo}..{hi} ({len(indices)} episodes)"
    return f"{len(indices)} episodes between {lo} and {hi} (with gaps)"


def _short_list(items: Sequence, limit: int = 10) -> str:
    shown = ", ".join(str(x) for x in list(items)[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _camera_size(key: str, feature: dict) -> tuple[int, int]:
    """(width, height) from the feature's video info, else from its shape."""
    info = feature.get("info") or {}
    if "video.width" in info and "video.height" in info:
        return int(info["video.width"]), int(info["video.height"])
    shape = feature.get("shape") or []
    names = feature.get("names")
    if len(shape) == 3:
        if isinstance(names, list) and "width" in names and "height" in names:
            return int(shape[names.index("width")]), int(shape[names.index("height")])
        return int(shape[1]), int(shape[0])  # LeRobot's default order: [h, w, c]
    raise DatasetError(
        f"meta/info.json: video feature {key!r} has neither info.video.width/height nor a "
        f"[height, width, channels] shape (got shape {shape!r}); add them to info.json"
    )


class LeRobotDataset:
    """A LeRobot v3.x dataset on local disk. Build it with :meth:`open`."""

    def __init__(self, root: Path, info: dict, columns: dict[str, np.ndarray], tasks: list):
        self.root = root
        self.info = info
        self.fps = float(info["fps"])
        self.cameras: tuple[str, ...] = tuple(
            k
            for k, f in info["features"].items()
            if isinstance(f, dict) and f.get("dtype") == "video"
        )
        self.name = root.name
        self._cols = columns
        self._tasks = tasks  # per row of the episodes table
        order = np.argsort(columns["episode_index"], kind="stable")
        self._indices = columns["episode_index"][order]
        self._row_of = {int(e): int(r) for e, r in zip(self._indices, order, strict=True)}
        self._sizes = {cam: _camera_size(cam, info["features"][cam]) for cam in self.cameras}
        self._info_cache: dict[int, EpisodeInfo] = {}
        self._size_cache: dict[Path, int] = {}
        self._path_cache: dict[tuple[str | None, int, int], Path] = {}

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike) -> LeRobotDataset:
        """Read and check ``meta/``; raise DatasetError on anything we cannot use."""
        root = Path(os.path.abspath(os.path.expanduser(root)))
        if not root.is_dir():
            raise DatasetError(f"dataset directory {root} does not exist")
        info = _read_info(root)
        cameras = [
            k
            for k, f in info["features"].items()
            if isinstance(f, dict) and f.get("dtype") == "video"
        ]
        if not cameras:
            raise DatasetError(
                f"{root / 'meta/info.json'}: no feature has dtype 'video', so there is nothing "
                "for the vision-language model to watch; annotate a dataset recorded with cameras"
            )
        columns, tasks = _read_episodes(root, cameras)
        dataset = cls(root, info, columns, tasks)
        dataset._check_files()
        return dataset

    def _check_files(self) -> None:
        cols = self._cols
        episodes = cols["episode_index"]
        data_keys = np.stack([cols["data/chunk_index"], cols["data/file_index"]], axis=1)
        for (chunk, file), eps in _group(data_keys, episodes):
            path = self._data_path(chunk, file)
            if not path.is_file():
                raise DatasetError(
                    f"data file {path} is missing; meta/episodes says episode(s) "
                    f"{_short_list(eps)} are stored in it. Restore the file (re-download "
                    "the dataset) or annotate only the other episodes with only_episodes"
                )
        for cam in self.cameras:
            keys = np.stack(
                [cols[f"videos/{cam}/chunk_index"], cols[f"videos/{cam}/file_index"]], axis=1
            )
            groups = list(_group(keys, episodes))
            paths = [(self._video_path(cam, c, f), eps) for (c, f), eps in groups]
            missing = [(p, eps) for p, eps in paths if not p.is_file()]
            if missing and len(missing) == len(paths):
                raise DatasetError(
                    f"no video file of camera {cam!r} exists: the video_path template in "
                    f"meta/info.json ({self.info['video_path']!r}) does not match the files on "
                    f"disk (expected e.g. {paths[0][0].relative_to(self.root)}). Under videos/ "
                    f"there is: {_listing(self.root / 'videos')}. Fix video_path in info.json "
                    "or move the files"
                )
            if missing:
                path, eps = missing[0]
                raise DatasetError(
                    f"video file {path} of camera {cam!r} is missing; meta/episodes says "
                    f"episode(s) {_short_list(eps)} are stored in it"
                    + (
                        f" ({len(missing)} video files are missing in all)"
                        if len(missing) > 1
                        else ""
                    )
                    + ". Restore the file (re-download the dataset) or annotate only the "
                    "other episodes with only_episodes"
                )

    # -- paths ---------------------------------------------------------------------
    def _data_path(self, chunk: int, file: int) -> Path:
        return self.root / _fill(
            self.info, "data_path", chunk_index=int(chunk), file_index=int(file)
        )

    def _video_path(self, camera: str, chunk: int, file: int) -> Path:
        rel = _fill(
            self.info, "video_path", video_key=camera, chunk_index=int(chunk), file_index=int(file)
        )
        return self.root / rel

    # -- episodes ------------------------------------------------------------------
    def episode_indices(self, only: Sequence[int] | None = None) -> list[int]:
        """All episode indices, sorted; or the ``only`` subset, checked to exist."""
        if only is None:
            return [int(i) for i in self._indices]
        unknown = sorted({int(i) for i in only} - self._row_of.keys())
        if unknown:
            raise DatasetError(
                f"only_episodes names episode(s) {_short_list(unknown)} that {self.root} does not "
                f"have; valid episode indices: {_format_range(self._indices)}"
            )
        return sorted({int(i) for i in only})

    def _row(self, index: int) -> int:
        try:
            return self._row_of[int(index)]
        except KeyError:
            raise DatasetError(
                f"episode {index} is not in {self.root}; valid episode indices: "
                f"{_format_range(self._indices)}"
            ) from None

    def episode_info(self, index: int) -> EpisodeInfo:
        index = int(index)
        cached = self._info_cache.get(index)
        if cached is not None:
            return cached
        row = self._row(index)
        cols = self._cols
        videos = {}
        for cam in self.cameras:
            width, height = self._sizes[cam]
            videos[cam] = VideoSegment(
                camera=cam,
                path=self._video_path(
                    cam,
                    cols[f"videos/{cam}/chunk_index"][row],
                    cols[f"videos/{cam}/file_index"][row],
                ),
                from_timestamp=float(cols[f"videos/{cam}/from_timestamp"][row]),
                to_timestamp=float(cols[f"videos/{cam}/to_timestamp"][row]),
                width=width,
                height=height,
            )
        info = EpisodeInfo(
            index=index,
            tasks=tuple(self._tasks[row] or ()),
            length=int(cols["length"][row]),
            data_path=self._data_path(cols["data/chunk_index"][row], cols["data/file_index"][row]),
            videos=videos,
        )
        self._info_cache[index] = info
        return info

    def load_episode(self, index: int) -> Episode:
        """The episode's float32 timestamps in frame order, read from its own shard only."""
        info = self.episode_info(index)
        path = info.data_path
        table = _read_episode_rows(path, info.index)
        if table.num_rows == 0:
            raise DatasetError(
                f"episode {info.index} has no frames in {path} (meta/episodes says it has "
                f"{info.length}); the dataset is inconsistent: exclude the episode with "
                "only_episodes or repair the dataset"
            )
        if "frame_index" in table.column_names:
            table = table.sort_by("frame_index")
        ts = table.column("timestamp")
        if ts.null_count:
            raise DatasetError(f"{path}: episode {info.index} has null timestamps")
        if ts.type != pa.float32():
            if not pa.types.is_floating(ts.type):
                raise DatasetError(
                    f"{path}: column 'timestamp' has type {ts.type}, expected float32 seconds"
                )
            log.warning("%s: timestamp is %s, not float32; narrowing it to float32", path, ts.type)
            ts = ts.cast(pa.float32())
        timestamps = ts.to_numpy().astype(np.float32, copy=False)
        _check_timestamps(path, info.index, timestamps)
        if len(timestamps) != info.length:
            log.warning(
                "episode %d: %s has %d frames but meta/episodes says length %d; using the frames",
                info.index,
                path,
                len(timestamps),
                info.length,
            )
        return Episode(info=info, timestamps=timestamps, task=info.tasks[0] if info.tasks else "")

    def load_vectors(self, index: int, key: str) -> np.ndarray:
        """A vector feature (``observation.state``, ``action``) of one episode as a
        frames x channels float64 array, in frame order."""
        info = self.episode_info(index)
        table = _read_episode_rows(info.data_path, info.index, extra=(key,))
        if "frame_index" in table.column_names:
            table = table.sort_by("frame_index")
        column = table.column(key)
        if column.null_count or not (
            pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type)
        ):
            raise DatasetError(
                f"{info.data_path}: column {key!r} of episode {info.index} is not a vector per "
                f"frame (type {column.type}, {column.null_count} nulls)"
            )
        return np.asarray(column.to_pylist(), dtype=np.float64).reshape(table.num_rows, -1)

    # -- files ---------------------------------------------------------------------
    def data_files(self) -> list[Path]:
        """Every data shard referenced by meta/episodes, in (chunk, file) order."""
        keys = np.stack([self._cols["data/chunk_index"], self._cols["data/file_index"]], axis=1)
        return [self._data_path(c, f) for c, f in np.unique(keys, axis=0)]

    def source_files(self, indices: Iterable[int]) -> list[Path]:
        """Data shards and video files holding these episodes (sorted, no duplicates)."""
        # From the (chunk, file) columns directly, each distinct file's path built once:
        # the Snakefile asks this for every shard of 10,000 episodes on every start.
        cols = self._cols
        keys = [("data/chunk_index", "data/file_index", None)] + [
            (f"videos/{cam}/chunk_index", f"videos/{cam}/file_index", cam) for cam in self.cameras
        ]
        wanted = set()
        for i in indices:
            row = self._row(i)
            for chunk_col, file_col, cam in keys:
                wanted.add((cam, int(cols[chunk_col][row]), int(cols[file_col][row])))
        files = set()
        for cam, chunk, file in wanted:
            path = self._path_cache.get((cam, chunk, file))
            if path is None:
                if cam is None:
                    path = self._data_path(chunk, file)
                else:
                    path = self._video_path(cam, chunk, file)
                self._path_cache[(cam, chunk, file)] = path
            files.add(path)
        return sorted(files)

    def episode_fingerprint(self, index: int) -> str:
        """A stable sha256 of what the annotators see of this episode (no mtimes)."""
        info = self.episode_info(index)
        row = self._row(index)
        meta = {name: _plain(col[row]) for name, col in sorted(self._cols.items())}
        doc = {
            "fps": self.fps,
            "meta": meta,
            "tasks": list(info.tasks),
            "data": [self._rel(info.data_path), self._size(info.data_path)],
            "videos": {
                cam: [
                    self._rel(seg.path),
                    self._size(seg.path),
                    seg.from_timestamp,
                    seg.to_timestamp,
                    seg.width,
                    seg.height,
                ]
                for cam, seg in info.videos.items()
            },
        }
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _size(self, path: Path) -> int:
        if path not in self._size_cache:
            try:
                self._size_cache[path] = path.stat().st_size
            except FileNotFoundError:
                raise DatasetError(f"{path} disappeared after the dataset was opened") from None
        return self._size_cache[path]

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset({str(self.root)!r}, episodes={len(self._indices)}, "
            f"fps={self.fps:g}, cameras={list(self.cameras)})"
        )


# -- helpers -------------------------------------------------------------------------
def _read_info(root: Path) -> dict:
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing: {root} is not a LeRobot dataset (expected meta/info.json, "
            "meta/episodes/, data/ and videos/); point dataset.root at the dataset's top directory"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(info, dict):
        raise DatasetError(f"{path} must hold a JSON object")
    version = str(info.get("codebase_version", ""))
    if version.startswith("v2") or version.startswith("v1"):
        raise DatasetError(
            f"{path}: codebase_version is {version!r}: this is a LeRobot {version[:2]} dataset, "
            "and episcribe reads v3.x only. Convert it with LeRobot's v2.1 -> v3.0 converter: "
            f"`{V21_CONVERTER} --repo-id=<repo_id>` (update to v2.1 first if it is older)"
        )
    if not version.startswith("v3."):
        raise DatasetError(
            f"{path}: codebase_version is {version!r}; episcribe reads LeRobot v3.x datasets "
            "(codebase_version 'v3.0' or 'v3.1')"
        )
    for key in ("fps", "features", "data_path", "video_path"):
        if key not in info:
            raise DatasetError(f"{path}: required key {key!r} is missing")
    if not isinstance(info["features"], dict):
        raise DatasetError(f"{path}: 'features' must be an object of feature specs")
    try:
        fps = float(info["fps"])
    except (TypeError, ValueError):
        fps = 0.0
    if not 0 < fps <= MAX_FPS:
        raise DatasetError(
            f"{path}: fps must be a frame rate between 0 and {MAX_FPS:g}, got {info['fps']!r}; "
            "fix 'fps' in meta/info.json"
        )
    return info


def _check_timestamps(path: Path, episode: int, timestamps: np.ndarray) -> None:
    """Annotations sit on frame timestamps, so they must be finite and strictly rising."""
    bad = np.flatnonzero(~np.isfinite(timestamps))
    if len(bad):
        raise DatasetError(
            f"{path}: episode {episode} has a non-finite timestamp ({timestamps[bad[0]]}) at "
            f"its frame {bad[0]}; repair the shard or exclude the episode with "
            "dataset.only_episodes"
        )
    back = np.flatnonzero(np.diff(timestamps) <= 0)
    if len(back):
        i = int(back[0])
        raise DatasetError(
            f"{path}: episode {episode}'s timestamps do not rise at its frame {i + 1} "
            f"({timestamps[i]:.6f} s, then {timestamps[i + 1]:.6f} s); repair the shard or "
            "exclude the episode with dataset.only_episodes"
        )


def _fill(info: dict, key: str, **fields) -> str:
    template = info[key]
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise DatasetError(
            f"meta/info.json: the {key} template {template!r} cannot be filled with "
            f"{sorted(fields)} ({type(exc).__name__}: {exc}); v3 templates use "
            "{chunk_index}, {file_index} (and {video_key} for videos)"
        ) from None


def _episode_columns(cameras: Sequence[str]) -> list[str]:
    cols = [
        "episode_index",
        "length",
        "data/chunk_index",
        "data/file_index",
        "dataset_from_index",
        "dataset_to_index",
    ]
    for cam in cameras:
        cols += [f"videos/{cam}/{k}" for k in ("chunk_index", "file_index")]
        cols += [f"videos/{cam}/{k}" for k in ("from_timestamp", "to_timestamp")]
    return cols


def _read_episodes(root: Path, cameras: Sequence[str]) -> tuple[dict[str, np.ndarray], list]:
    """The episodes metadata as numpy columns (one entry per episode) and task lists."""
    meta_dir = root / "meta" / "episodes"
    files = sorted(meta_dir.glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(
            f"{meta_dir} holds no chunk-*/file-*.parquet: the episodes metadata is missing, so "
            "episodes cannot be located; re-download the dataset's meta/ directory"
        )
    wanted = _episode_columns(cameras)
    numeric: dict[str, list[np.ndarray]] = {c: [] for c in wanted}
    tasks: list = []
    for path in files:
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(f"{path} is not a readable parquet file: {exc}") from None
        absent = [c for c in [*wanted, "tasks"] if c not in schema.names]
        if absent:
            cam_cols = [c for c in absent if c.startswith("videos/")]
            hint = (
                f"; the cameras in info.json are {list(cameras)} and this file has video "
                f"columns for {_video_keys(schema.names)}"
                if cam_cols
                else ""
            )
            raise DatasetError(
                f"{path} lacks column(s) {_short_list(absent)}{hint}; it is not LeRobot v3 "
                "episodes metadata"
            )
        try:
            table = pq.read_table(path, columns=[*wanted, "tasks"])
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(f"{path} is not a readable parquet file: {exc}") from None
        for c in wanted:
            col = table.column(c)
            if col.null_count:
                bad = table.column("episode_index").filter(pc.is_null(col)).to_pylist()
                raise DatasetError(
                    f"{path}: column {c!r} is empty for episode(s) {_short_list(bad)}; the "
                    "episodes metadata is incomplete"
                )
            numeric[c].append(col.to_numpy())
        tasks.extend(table.column("tasks").to_pylist())
    columns = {c: np.concatenate(parts) for c, parts in numeric.items()}
    episodes = columns["episode_index"]
    uniq, counts = np.unique(episodes, return_counts=True)
    if (counts > 1).any():
        raise DatasetError(
            f"{meta_dir}: episode(s) {_short_list(uniq[counts > 1].tolist())} appear more than "
            "once in the episodes metadata"
        )
    return columns, tasks


def _video_keys(names: Sequence[str]) -> list[str]:
    keys = []
    for n in names:
        if n.startswith("videos/") and n.endswith("/chunk_index"):
            keys.append(n[len("videos/") : -len("/chunk_index")])
    return keys


def _group(keys: np.ndarray, episodes: np.ndarray):
    """Yield ((chunk, file), [episodes...]) for each distinct (chunk, file) row of keys."""
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    for k, (chunk, file) in enumerate(uniq):
        eps = np.sort(episodes[order[bounds[k] : bounds[k + 1]]]).tolist()
        yield (int(chunk), int(file)), eps


def _listing(directory: Path, limit: int = 8) -> str:
    if not directory.is_dir():
        return "nothing (the directory does not exist)"
    found = sorted(p.relative_to(directory.parent).as_posix() for p in directory.rglob("*.mp4"))
    if not found:
        return "no .mp4 files"
    return _short_list(found, limit)


def _read_episode_rows(path: Path, index: int, extra: Sequence[str] = ()) -> pa.Table:
    """Only this episode's rows (timestamp, episode_index, frame_index and ``extra``
    columns): row groups whose episode_index stats may hold it."""
    if not path.is_file():
        raise DatasetError(f"data file {path} of episode {index} is missing")
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        absent = [c for c in ("timestamp", "episode_index", *extra) if c not in names]
        if absent:
            raise DatasetError(
                f"data file {path} has no {' or '.join(repr(c) for c in absent)} column; "
                "LeRobot v3 data shards need timestamp and episode_index for every frame"
                + (f", and {', '.join(extra)} was asked for" if extra else "")
            )
        columns = ["timestamp", "episode_index", *extra] + (
            ["frame_index"] if "frame_index" in names else []
        )
        ep_col = names.index("episode_index")
        groups = []
        for g in range(pf.metadata.num_row_groups):
            stats = pf.metadata.row_group(g).column(ep_col).statistics
            if stats is not None and stats.has_min_max and not (stats.min <= index <= stats.max):
                continue
            groups.append(g)
        if not groups:
            return pf.schema_arrow.empty_table().select(columns)
        table = pf.read_row_groups(groups, columns=columns)
    except DatasetError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(
            f"data file {path} (episode {index}) is not a readable parquet file: {exc}"
        ) from None
    return table.filter(pc.equal(table.column("episode_index"), index))


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value

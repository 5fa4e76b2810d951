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

from episcribe.errors import DatasetError
from episcribe.lerobot.dataset_files import (
    camera_size,
    check_timestamps,
    fill_template,
    format_range,
    group_rows,
    is_depth_map,
    listing,
    plain,
    read_episode_rows,
    read_episodes,
    read_info,
    short_list,
    video_features,
)

log = logging.getLogger(__name__)


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


class LeRobotDataset:
    """A LeRobot v3.x dataset on local disk. Build it with :meth:`open`."""

    def __init__(self, root: Path, info: dict, columns: dict[str, np.ndarray], tasks: list):
        self.root = root
        self.info = info
        self.fps = float(info["fps"])
        # Every video stream (files to check, segments); the cameras are the colour ones,
        # all the model is ever shown: LeRobot marks a depth stream's video info
        # video.is_depth_map, and a depth map is no picture of the scene.
        self.video_keys: tuple[str, ...] = video_features(info)
        self.depth_streams: tuple[str, ...] = tuple(
            k for k in self.video_keys if is_depth_map(info["features"][k])
        )
        self.cameras: tuple[str, ...] = tuple(
            k for k in self.video_keys if k not in self.depth_streams
        )
        self.name = root.name
        self._cols = columns
        self._tasks = tasks  # per row of the episodes table
        order = np.argsort(columns["episode_index"], kind="stable")
        self._indices = columns["episode_index"][order]
        self._row_of = {int(e): int(r) for e, r in zip(self._indices, order, strict=True)}
        self._sizes = {cam: camera_size(cam, info["features"][cam]) for cam in self.video_keys}
        self._info_cache: dict[int, EpisodeInfo] = {}
        self._size_cache: dict[Path, int] = {}
        self._path_cache: dict[tuple[str | None, int, int], Path] = {}

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike, episodes: Sequence[int] | None = None) -> LeRobotDataset:
        """Read and check ``meta/``; raise DatasetError on anything we cannot use.

        ``episodes``: only the data and video files holding these must exist (published
        datasets often lack some files); None: every file meta/episodes names.
        """
        root = Path(os.path.abspath(os.path.expanduser(root)))
        if not root.is_dir():
            raise DatasetError(f"dataset directory {root} does not exist")
        info = read_info(root)
        cameras = list(video_features(info))
        if not cameras:
            raise DatasetError(
                f"{root / 'meta/info.json'}: no feature has dtype 'video', so there is nothing "
                "for the vision-language model to watch; annotate a dataset recorded with cameras"
            )
        columns, tasks = read_episodes(root, cameras)
        dataset = cls(root, info, columns, tasks)
        dataset._check_files(None if episodes is None else {int(e) for e in episodes})
        return dataset

    def _check_files(self, wanted: set[int] | None) -> None:
        cols = self._cols
        episodes = cols["episode_index"]
        data_keys = np.stack([cols["data/chunk_index"], cols["data/file_index"]], axis=1)
        for (chunk, file), eps in group_rows(data_keys, episodes):
            path = self._data_path(chunk, file)
            if not path.is_file() and (wanted is None or wanted.intersection(eps)):
                raise DatasetError(
                    f"data file {path} is missing; meta/episodes says episode(s) "
                    f"{short_list(eps)} are stored in it. Restore the file (re-download "
                    "the dataset) or annotate only the other episodes with only_episodes"
                )
        for cam in self.video_keys:
            keys = np.stack(
                [cols[f"videos/{cam}/chunk_index"], cols[f"videos/{cam}/file_index"]], axis=1
            )
            groups = list(group_rows(keys, episodes))
            paths = [(self._video_path(cam, c, f), eps) for (c, f), eps in groups]
            missing = [(p, eps) for p, eps in paths if not p.is_file()]
            if missing and len(missing) == len(paths):
                raise DatasetError(
                    f"no video file of camera {cam!r} exists: the video_path template in "
                    f"meta/info.json ({self.info['video_path']!r}) does not match the files on "
                    f"disk (expected e.g. {paths[0][0].relative_to(self.root)}). Under videos/ "
                    f"there is: {listing(self.root / 'videos')}. Fix video_path in info.json "
                    "or move the files"
                )
            if wanted is not None:
                missing = [(p, eps) for p, eps in missing if wanted.intersection(eps)]
            if missing:
                path, eps = missing[0]
                raise DatasetError(
                    f"video file {path} of camera {cam!r} is missing; meta/episodes says "
                    f"episode(s) {short_list(eps)} are stored in it"
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
        return self.root / fill_template(
            self.info, "data_path", chunk_index=int(chunk), file_index=int(file)
        )

    def _video_path(self, camera: str, chunk: int, file: int) -> Path:
        rel = fill_template(
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
                f"only_episodes names episode(s) {short_list(unknown)} that {self.root} does not "
                f"have; valid episode indices: {format_range(self._indices)}"
            )
        return sorted({int(i) for i in only})

    def _row(self, index: int) -> int:
        try:
            return self._row_of[int(index)]
        except KeyError:
            raise DatasetError(
                f"episode {index} is not in {self.root}; valid episode indices: "
                f"{format_range(self._indices)}"
            ) from None

    def episode_info(self, index: int) -> EpisodeInfo:
        index = int(index)
        cached = self._info_cache.get(index)
        if cached is not None:
            return cached
        row = self._row(index)
        cols = self._cols
        videos = {}
        for cam in self.video_keys:
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
        table = read_episode_rows(path, info.index)
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
        check_timestamps(path, info.index, timestamps)
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
        table = read_episode_rows(info.data_path, info.index, extra=(key,))
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

    def absent_files(self) -> list[Path]:
        """Data and video files meta/episodes names that are not on disk."""
        return [p for p in self.source_files(self.episode_indices()) if not p.is_file()]

    def episode_fingerprint(self, index: int) -> str:
        """A stable sha256 of what the annotators see of this episode (no mtimes)."""
        info = self.episode_info(index)
        row = self._row(index)
        meta = {name: plain(col[row]) for name, col in sorted(self._cols.items())}
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

"""Reading a LeRobot v3.x dataset's files: ``meta/info.json``, the episodes table, one
episode's frame rows, with the checks that turn bad input into a named ``DatasetError``.

:mod:`episcribe.lerobot.dataset` builds the dataset and its episodes from these.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from episcribe.errors import DatasetError

log = logging.getLogger(__name__)

MAX_FPS = 1000.0  # far above any robot camera; a larger value is a broken info.json
V21_CONVERTER = "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30"


def format_range(indices: np.ndarray) -> str:
    if len(indices) == 0:
        return "none (the dataset has no episodes)"
    lo, hi = int(indices.min()), int(indices.max())
    if hi - lo + 1 == len(indices):
        return f"{lo}..{hi} ({len(indices)} episodes)"
    return f"{len(indices)} episodes between {lo} and {hi} (with gaps)"


def short_list(items: Sequence, limit: int = 10) -> str:
    shown = ", ".join(str(x) for x in list(items)[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def video_features(info: dict) -> tuple[str, ...]:
    """The features of ``info.json`` stored as videos, in its order."""
    return tuple(
        k for k, f in info["features"].items() if isinstance(f, dict) and f.get("dtype") == "video"
    )


def is_depth_map(feature: dict) -> bool:
    """Whether a video feature is a depth stream (LeRobot's ``info.video.is_depth_map``)."""
    return (feature.get("info") or {}).get("video.is_depth_map") is True


def camera_size(key: str, feature: dict) -> tuple[int, int]:
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


def read_info(root: Path) -> dict:
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


def check_timestamps(path: Path, episode: int, timestamps: np.ndarray) -> None:
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


def fill_template(info: dict, key: str, **fields) -> str:
    template = info[key]
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise DatasetError(
            f"meta/info.json: the {key} template {template!r} cannot be filled with "
            f"{sorted(fields)} ({type(exc).__name__}: {exc}); v3 templates use "
            "{chunk_index}, {file_index} (and {video_key} for videos)"
        ) from None


def episode_columns(cameras: Sequence[str]) -> list[str]:
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


def read_episodes(root: Path, cameras: Sequence[str]) -> tuple[dict[str, np.ndarray], list]:
    """The episodes metadata as numpy columns (one entry per episode) and task lists."""
    meta_dir = root / "meta" / "episodes"
    files = sorted(meta_dir.glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(
            f"{meta_dir} holds no chunk-*/file-*.parquet: the episodes metadata is missing, so "
            "episodes cannot be located; re-download the dataset's meta/ directory"
        )
    wanted = episode_columns(cameras)
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
                f"columns for {video_keys(schema.names)}"
                if cam_cols
                else ""
            )
            raise DatasetError(
                f"{path} lacks column(s) {short_list(absent)}{hint}; it is not LeRobot v3 "
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
                    f"{path}: column {c!r} is empty for episode(s) {short_list(bad)}; the "
                    "episodes metadata is incomplete"
                )
            numeric[c].append(col.to_numpy())
        try:
            tasks.extend(table.column("tasks").to_pylist())
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"{path}: a task text in column 'tasks' is not valid UTF-8 ({exc.object[:40]!r}); "
                "re-encode the task texts as UTF-8"
            ) from None
    columns = {c: np.concatenate(parts) for c, parts in numeric.items()}
    episodes = columns["episode_index"]
    uniq, counts = np.unique(episodes, return_counts=True)
    if (counts > 1).any():
        raise DatasetError(
            f"{meta_dir}: episode(s) {short_list(uniq[counts > 1].tolist())} appear more than "
            "once in the episodes metadata"
        )
    return columns, tasks


def video_keys(names: Sequence[str]) -> list[str]:
    keys = []
    for n in names:
        if n.startswith("videos/") and n.endswith("/chunk_index"):
            keys.append(n[len("videos/") : -len("/chunk_index")])
    return keys


def group_rows(keys: np.ndarray, episodes: np.ndarray):
    """Yield ((chunk, file), [episodes...]) for each distinct (chunk, file) row of keys."""
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    for k, (chunk, file) in enumerate(uniq):
        eps = np.sort(episodes[order[bounds[k] : bounds[k + 1]]]).tolist()
        yield (int(chunk), int(file)), eps


def listing(directory: Path, limit: int = 8) -> str:
    if not directory.is_dir():
        return "nothing (the directory does not exist)"
    found = sorted(p.relative_to(directory.parent).as_posix() for p in directory.rglob("*.mp4"))
    if not found:
        return "no .mp4 files"
    return short_list(found, limit)


def read_episode_rows(path: Path, index: int, extra: Sequence[str] = ()) -> pa.Table:
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


def plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value

"""The preflight's look at the data itself, before any job runs or model is called.

Opening a dataset reads only ``meta/``; what a job would otherwise find late (once per
job, after model calls) is found here, for the episodes the run annotates: every data
shard holding them opens (its parquet footer), each episode has frames and as many as
``meta/episodes`` says, its frames are 1/fps apart (the median interval: rows placed by
the wrong clock are wrong without any error), the episode indices are 0..N-1 as LeRobot
v3 needs them (it finds an episode's row in ``meta/episodes`` by its index, so after a
gap every later index points at the wrong episode), and every task text is valid UTF-8.

Only the footer and the ``episode_index`` and ``timestamp`` columns are read. Each
problem class is one line naming the files and episodes; all of them are reported at
once, so one fix-and-retry round finds everything.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from episcribe.errors import DatasetError
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.lerobot.dataset_files import format_range, short_list

# The median frame interval may differ from 1/fps by this share (float32 timestamps,
# recorders that drop a frame now and then).
FPS_TOLERANCE = 0.05


def check_data(dataset: LeRobotDataset, episodes: Sequence[int]) -> None:
    """Raise one DatasetError listing every problem class found; nothing is written."""
    problems = [
        *_check_indices(dataset),
        *_check_frames(dataset, episodes),
        *_check_task_texts(dataset.root),
    ]
    if problems:
        raise DatasetError("the data cannot be annotated as it is:\n  " + "\n  ".join(problems))


def _check_indices(dataset: LeRobotDataset) -> list[str]:
    indices = np.asarray(dataset.episode_indices())
    expected = np.arange(len(indices))
    if np.array_equal(indices, expected):
        return []
    missing = np.setdiff1d(np.arange(indices.max() + 1), indices)
    return [
        f"{dataset.root / 'meta' / 'episodes'}: episode indices {format_range(indices)} have "
        f"a gap (no episode {short_list(missing.tolist())}); LeRobot v3 finds an episode by "
        "its index in meta/episodes, so renumber the episodes 0..N-1 (e.g. with LeRobot's "
        "dataset tools) before annotating"
    ]


def _check_frames(dataset: LeRobotDataset, episodes: Sequence[int]) -> list[str]:
    by_shard: dict[Path, list[int]] = defaultdict(list)
    for index in episodes:
        by_shard[dataset.episode_info(index).data_path].append(index)
    unreadable, empty, miscounted, off_clock = [], [], [], []
    period = 1.0 / dataset.fps
    for path, wanted in sorted(by_shard.items()):
        try:
            table = pq.ParquetFile(path).read(columns=["episode_index", "timestamp"])
        except (pa.ArrowException, OSError, ValueError) as exc:
            unreadable.append(
                f"{path} ({str(exc).splitlines()[0][:120]}; episodes {short_list(wanted)})"
            )
            continue
        ep = table.column("episode_index").to_numpy(zero_copy_only=False)
        ts = table.column("timestamp").to_numpy(zero_copy_only=False).astype(np.float64)
        order = np.lexsort((ts, ep))
        ep, ts = ep[order], ts[order]
        for index in wanted:
            lo, hi = np.searchsorted(ep, [index, index + 1])
            frames, length = int(hi - lo), dataset.episode_info(index).length
            if frames == 0 or length == 0:
                empty.append(f"{index} ({path.name}: {frames} frames, meta length {length})")
                continue
            if frames != length:
                miscounted.append(f"{index} ({path.name}: {frames} frames, meta length {length})")
            if frames >= 2:
                interval = float(np.median(np.diff(ts[lo:hi])))
                if abs(interval - period) > FPS_TOLERANCE * period:
                    off_clock.append(f"{index} ({path.name}: {interval * 1000:.1f} ms)")
    problems = []
    if unreadable:
        problems.append(
            f"data shard(s) not readable as parquet: {short_list(unreadable, 3)}; re-download them"
        )
    if empty:
        problems.append(
            f"episode(s) without frames: {short_list(empty, 5)}; exclude them with "
            "dataset.only_episodes or repair the dataset"
        )
    if miscounted:
        problems.append(
            f"episode(s) whose frame count differs from meta/episodes' length: "
            f"{short_list(miscounted, 5)}; repair meta/episodes or exclude them with "
            "dataset.only_episodes"
        )
    if off_clock:
        problems.append(
            f"meta/info.json says fps {dataset.fps:g} (frames {period * 1000:.1f} ms apart) "
            f"but episode(s) {short_list(off_clock, 5)} have that median frame interval; "
            "fix fps in meta/info.json"
        )
    return problems


def _check_task_texts(root: Path) -> list[str]:
    """Task strings that are not valid UTF-8, in meta/tasks.parquet."""
    path = root / "meta" / "tasks.parquet"
    if not path.is_file():
        return []
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        return [f"{path} is not readable parquet ({exc}); re-download it"]
    bad = []
    for name in table.column_names:
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        raw = column.cast(pa.binary() if pa.types.is_string(column.type) else pa.large_binary())
        for row, value in enumerate(raw.to_pylist()):
            try:
                if value is not None:
                    value.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(f"row {row} ({value[:40]!r})")
    if not bad:
        return []
    return [
        f"{path}: task text(s) that are not valid UTF-8: {short_list(bad, 3)}; re-encode "
        "them as UTF-8"
    ]

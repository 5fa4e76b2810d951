"""Synthetic datasets: the real v3 layout, back-to-back videos, and determinism."""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synth import make_dataset, read_frame_code

from episcribe.lerobot.dataset import LeRobotDataset


def parquet_tables(root: Path) -> dict[str, pa.Table]:
    return {
        p.relative_to(root).as_posix(): pq.read_table(p) for p in sorted(root.rglob("*.parquet"))
    }


def decoded_frames(root: Path) -> dict[str, list[np.ndarray]]:
    frames = {}
    for path in sorted(root.rglob("*.mp4")):
        with av.open(str(path)) as container:
            frames[path.relative_to(root).as_posix()] = [
                f.to_ndarray(format="rgb24") for f in container.decode(video=0)
            ]
    return frames


def test_same_arguments_give_identical_tables_and_frames(tmp_path):
    opts = dict(episodes=3, episodes_per_file=2, seconds=2.0, seed=7)
    a = make_dataset(tmp_path / "a", **opts)
    b = make_dataset(tmp_path / "b", **opts)
    ta, tb = parquet_tables(a), parquet_tables(b)
    assert ta.keys() == tb.keys() and len(ta) == 4  # tasks, episodes, two data shards
    for name in ta:
        assert ta[name].equals(tb[name]), name
    assert (a / "meta/info.json").read_text() == (b / "meta/info.json").read_text()
    fa, fb = decoded_frames(a), decoded_frames(b)
    assert fa.keys() == fb.keys() and len(fa) == 4  # two cameras x two files
    for name in fa:
        assert len(fa[name]) == len(fb[name])
        assert all(np.array_equal(x, y) for x, y in zip(fa[name], fb[name], strict=True)), name


def test_another_seed_moves_the_shapes(tmp_path):
    a = make_dataset(tmp_path / "a", episodes=1, seconds=1.0, cameras=("cam",), seed=0)
    b = make_dataset(tmp_path / "b", episodes=1, seconds=1.0, cameras=("cam",), seed=1)
    fa, fb = decoded_frames(a), decoded_frames(b)
    name = next(iter(fa))
    assert not np.array_equal(fa[name][0], fb[name][0])


def test_layout_and_schema_follow_the_real_dataset(synth_small, g1_source):
    info = json.loads((synth_small / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["total_episodes"] == 6 and info["total_frames"] == 240
    assert sorted(p.name for p in (synth_small / "data/chunk-000").iterdir()) == [
        "file-000.parquet",
        "file-001.parquet",
    ]
    real = pq.read_schema(g1_source / "data/chunk-000/file-000.parquet")
    ours = pq.read_schema(synth_small / "data/chunk-000/file-000.parquet")
    for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert ours.field(name).type == real.field(name).type, name
    for name in ("observation.state", "action"):
        assert pa.types.is_fixed_size_list(ours.field(name).type)
        assert ours.field(name).type.value_type == pa.float32()
    real_meta = pq.read_schema(g1_source / "meta/episodes/chunk-000/file-000.parquet")
    ours_meta = pq.read_schema(synth_small / "meta/episodes/chunk-000/file-000.parquet")
    for name in real_meta.names:
        if not name.startswith("videos/"):
            assert ours_meta.field(name).type == real_meta.field(name).type, name
    tasks = pd.read_parquet(synth_small / "meta/tasks.parquet")
    assert list(tasks.index) == [
        "Pick up the red block and place it in the blue bowl.",
        "Pick up the green cube and put it on the yellow plate.",
    ]
    assert list(tasks["task_index"]) == [0, 1]


def test_timestamps_are_frame_index_over_fps_in_float32(synth_small):
    table = pq.read_table(synth_small / "data/chunk-000/file-001.parquet")
    frame = table["frame_index"].to_numpy()
    expected = frame.astype(np.float32) / np.float32(10)
    assert table["timestamp"].to_numpy().tobytes() == expected.tobytes()
    assert table["index"].to_numpy()[0] == 160  # global index continues across files


def test_episodes_are_back_to_back_in_each_video_file(synth_small):
    ds = LeRobotDataset.open(synth_small)
    for cam in ds.cameras:
        segs = [ds.episode_info(i).videos[cam] for i in ds.episode_indices()]
        assert [s.path.name for s in segs] == ["file-000.mp4"] * 4 + ["file-001.mp4"] * 2
        assert [(s.from_timestamp, s.to_timestamp) for s in segs] == [
            (0.0, 4.0),
            (4.0, 8.0),
            (8.0, 12.0),
            (12.0, 16.0),
            (0.0, 4.0),
            (4.0, 8.0),
        ]
        frames = decoded_frames(synth_small)[f"videos/{cam}/chunk-000/file-000.mp4"]
        assert len(frames) == 160
        assert [read_frame_code(f) for f in frames[38:42]] == [(0, 38), (0, 39), (1, 0), (1, 1)]


def test_video_has_keyframes_every_two_seconds_so_seeking_matters(synth_small):
    path = synth_small / "videos/observation.images.top/chunk-000/file-000.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keys = [float(p.pts * stream.time_base) for p in container.demux(stream) if p.is_keyframe]
    assert keys[:3] == [0.0, 2.0, 4.0]


def test_tasks_per_episode_are_written_as_given(make_synth):
    root = make_synth(episodes=3, seconds=1.0, tasks=["stack cups", ["wipe", "tidy"], []])
    ds = LeRobotDataset.open(root)
    assert [ds.load_episode(i).task for i in range(3)] == ["stack cups", "wipe", ""]
    assert ds.episode_info(1).tasks == ("wipe", "tidy")
    assert list(pd.read_parquet(root / "meta/tasks.parquet").index) == [
        "stack cups",
        "wipe",
        "tidy",
    ]


def test_default_build_is_fast_and_refuses_a_non_empty_root(tmp_path):
    start = time.perf_counter()
    root = make_dataset(tmp_path / "fast")
    assert time.perf_counter() - start < 5.0
    with pytest.raises(FileExistsError):
        make_dataset(root)
    assert LeRobotDataset.open(root).episode_indices() == list(range(6))

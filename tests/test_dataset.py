"""The LeRobot v3 reader, on the real AV1 dataset, synthetic ones and damaged copies."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from episcribe.errors import DatasetError
from episcribe.lerobot.dataset import LeRobotDataset

G1_CAM = "observation.images.cam_high"


def stored_timestamps(data_file: Path, episode: int) -> np.ndarray:
    table = pq.read_table(data_file)
    table = table.filter(pc.equal(table["episode_index"], episode)).sort_by("frame_index")
    return table["timestamp"].to_numpy()


def edit_info(root: Path, **changes) -> None:
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    info.update(changes)
    path.write_text(json.dumps(info))


# -- reading ------------------------------------------------------------------------
def test_g1_cameras_fps_and_episodes_come_from_meta(g1_source):
    ds = LeRobotDataset.open(g1_source)
    assert ds.cameras == (G1_CAM,)
    assert ds.fps == 30.0
    assert ds.name == "g1_bottle"
    assert ds.episode_indices() == [0, 1, 2]
    seg = ds.episode_info(0).videos[G1_CAM]
    assert (seg.width, seg.height) == (640, 480)
    assert ds.episode_info(2).tasks == ("Pick up the yellow bottle on the table.",)


@pytest.mark.parametrize("which", ["g1", "synth"])
def test_timestamps_are_the_stored_float32_bytes(which, g1_source, synth_small):
    ds = LeRobotDataset.open(g1_source if which == "g1" else synth_small)
    for i in ds.episode_indices():
        ep = ds.load_episode(i)
        assert ep.timestamps.dtype == np.float32
        expected = stored_timestamps(ep.info.data_path, i)
        assert ep.timestamps.tobytes() == expected.tobytes()
        assert len(ep.timestamps) == ep.info.length


def test_episode_starting_mid_file_gets_its_own_rows_and_video_offset(g1_source, synth_small):
    g1 = LeRobotDataset.open(g1_source)
    ep = g1.load_episode(1)
    assert ep.info.data_path.name == "file-000.parquet"  # shared with episode 0
    assert len(ep.timestamps) == 343 and ep.timestamps[0] == 0.0
    assert ep.info.videos[G1_CAM].from_timestamp == pytest.approx(13.1)
    assert ep.duration == pytest.approx(342 / 30, abs=1e-5)
    assert ep.task == "Pick up the yellow bottle on the table."

    synth = LeRobotDataset.open(synth_small)
    ep = synth.load_episode(5)  # second episode of the second file
    assert ep.info.data_path.name == "file-001.parquet"
    for seg in ep.info.videos.values():
        assert seg.path.name == "file-001.mp4"
        assert seg.from_timestamp == pytest.approx(4.0)
        assert seg.to_timestamp == pytest.approx(8.0)


def test_only_episodes_selects_a_sorted_subset(synth_small):
    ds = LeRobotDataset.open(synth_small)
    assert ds.episode_indices([5, 1, 1]) == [1, 5]
    assert ds.episode_indices([]) == []


def test_unknown_only_episodes_index_is_named_with_the_valid_range(synth_small):
    ds = LeRobotDataset.open(synth_small)
    with pytest.raises(DatasetError, match=r"7, 99.*0\.\.5"):
        ds.episode_indices([0, 99, 7])


def test_cameras_are_any_video_feature_in_info_order(make_synth):
    root = make_synth(cameras=("wrist_rgb", "cam_front"), episodes=2, seconds=1.0)
    ds = LeRobotDataset.open(root)
    assert ds.cameras == ("wrist_rgb", "cam_front")
    assert ds.episode_info(1).videos["cam_front"].path.exists()


def test_v3_1_is_accepted(make_synth):
    root = make_synth(codebase_version="v3.1", episodes=1, seconds=1.0, cameras=("cam",))
    assert LeRobotDataset.open(root).episode_indices() == [0]


def test_load_episode_reads_only_its_own_shard(g1_copy):
    other = g1_copy / "data" / "chunk-000" / "file-001.parquet"
    other.write_bytes(b"not a parquet file")
    ds = LeRobotDataset.open(g1_copy)  # opening reads no data shard
    assert len(ds.load_episode(0).timestamps) == 393
    assert len(ds.load_episode(1).timestamps) == 343
    with pytest.raises(DatasetError, match=r"file-001\.parquet.*episode 2"):
        ds.load_episode(2)


def test_files_of_episodes_are_their_data_and_video_files(g1_source):
    ds = LeRobotDataset.open(g1_source)
    assert [p.name for p in ds.data_files()] == ["file-000.parquet", "file-001.parquet"]
    files = ds.source_files([1])
    assert [p.relative_to(g1_source).as_posix() for p in files] == [
        "data/chunk-000/file-000.parquet",
        f"videos/{G1_CAM}/chunk-000/file-000.mp4",
    ]
    assert len(ds.source_files([0, 1, 2])) == 4


def test_fingerprint_is_stable_across_copies_and_changes_with_the_episode(g1_source, g1_copy):
    src, copy = LeRobotDataset.open(g1_source), LeRobotDataset.open(g1_copy)
    assert [src.episode_fingerprint(i) for i in range(3)] == [
        copy.episode_fingerprint(i) for i in range(3)
    ]
    assert len({src.episode_fingerprint(i) for i in range(3)}) == 3
    # Rewriting episode 2's shard (another size) changes only episode 2's fingerprint.
    shard = g1_copy / "data" / "chunk-000" / "file-001.parquet"
    pq.write_table(pq.read_table(shard), shard, compression="none")
    changed = LeRobotDataset.open(g1_copy)
    assert changed.episode_fingerprint(0) == src.episode_fingerprint(0)
    assert changed.episode_fingerprint(2) != src.episode_fingerprint(2)


def test_open_reads_only_meta_and_is_fast_for_10000_episodes(synth_small, tmp_path):
    root = tmp_path / "big"
    shutil.copytree(synth_small, root)
    meta = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    row = pq.read_table(meta).slice(0, 1).to_pylist()[0]
    rows = [dict(row, episode_index=i) for i in range(10_000)]
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(meta)), meta)
    start = time.perf_counter()
    ds = LeRobotDataset.open(root)
    indices = ds.episode_indices()
    elapsed = time.perf_counter() - start
    assert len(indices) == 10_000
    assert elapsed < 1.0, f"open took {elapsed:.2f}s"


# -- bad input: every one is a DatasetError naming the thing -------------------------
def test_missing_info_json_is_named(g1_copy):
    (g1_copy / "meta" / "info.json").unlink()
    with pytest.raises(DatasetError, match=r"meta/info\.json is missing"):
        LeRobotDataset.open(g1_copy)


def test_v2_dataset_points_at_the_v21_to_v30_converter(g1_copy):
    edit_info(g1_copy, codebase_version="v2.1")
    with pytest.raises(DatasetError) as err:
        LeRobotDataset.open(g1_copy)
    assert "v2.1" in str(err.value)
    assert "convert_dataset_v21_to_v30" in str(err.value)


def test_dataset_without_video_features_is_refused(g1_copy):
    info = json.loads((g1_copy / "meta" / "info.json").read_text())
    info["features"][G1_CAM]["dtype"] = "image"
    edit_info(g1_copy, features=info["features"])
    with pytest.raises(DatasetError, match="no feature has dtype 'video'"):
        LeRobotDataset.open(g1_copy)


def test_missing_episodes_metadata_is_named(g1_copy):
    shutil.rmtree(g1_copy / "meta" / "episodes")
    with pytest.raises(DatasetError, match=r"meta/episodes.*episodes metadata is missing"):
        LeRobotDataset.open(g1_copy)


def test_missing_video_file_names_the_file_and_its_episodes(g1_copy):
    (g1_copy / "videos" / G1_CAM / "chunk-000" / "file-000.mp4").unlink()
    with pytest.raises(DatasetError) as err:
        LeRobotDataset.open(g1_copy)
    msg = str(err.value)
    assert "file-000.mp4" in msg and G1_CAM in msg and "episode(s) 0, 1" in msg


def test_missing_data_file_names_the_file_and_its_episode(g1_copy):
    (g1_copy / "data" / "chunk-000" / "file-001.parquet").unlink()
    with pytest.raises(DatasetError, match=r"file-001\.parquet is missing.*episode\(s\) 2"):
        LeRobotDataset.open(g1_copy)


def test_video_path_template_mismatch_shows_template_and_files_on_disk(g1_copy):
    template = "videos/{video_key}/chunk-{chunk_index:03d}/episode_{file_index:06d}.mp4"
    edit_info(g1_copy, video_path=template)
    with pytest.raises(DatasetError) as err:
        LeRobotDataset.open(g1_copy)
    msg = str(err.value)
    assert "video_path template" in msg and template in msg
    assert f"{G1_CAM}/chunk-000/file-000.mp4" in msg  # what is on disk


def test_data_shard_without_timestamp_is_named(make_synth):
    root = make_synth(episodes=2, seconds=1.0)
    shard = root / "data" / "chunk-000" / "file-000.parquet"
    pq.write_table(pq.read_table(shard).drop_columns(["timestamp"]), shard)
    ds = LeRobotDataset.open(root)
    with pytest.raises(DatasetError, match=r"file-000\.parquet has no 'timestamp' column"):
        ds.load_episode(0)


def test_episode_with_no_frames_in_its_shard_is_named(make_synth):
    root = make_synth(episodes=3, seconds=1.0)
    shard = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.filter(pc.not_equal(table["episode_index"], 1)), shard)
    ds = LeRobotDataset.open(root)
    assert len(ds.load_episode(2).timestamps) == 10
    with pytest.raises(DatasetError, match=r"episode 1 has no frames in .*file-000\.parquet"):
        ds.load_episode(1)


def test_corrupt_data_shard_is_named(g1_copy):
    shard = g1_copy / "data" / "chunk-000" / "file-000.parquet"
    shard.write_bytes(shard.read_bytes()[:1000])
    ds = LeRobotDataset.open(g1_copy)
    with pytest.raises(DatasetError, match=r"file-000\.parquet \(episode 0\) is not a readable"):
        ds.load_episode(0)


@pytest.mark.parametrize("fps", [1_000_000, 0, -30, "thirty"])
def test_implausible_fps_is_named(g1_copy, fps):
    edit_info(g1_copy, fps=fps)
    with pytest.raises(DatasetError, match=r"info\.json: fps must be a frame rate .*fix 'fps'"):
        LeRobotDataset.open(g1_copy)


def _rewrite_timestamps(root, episode, change):
    shard = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(shard)
    ts = table.column("timestamp").to_numpy().copy()
    rows = np.flatnonzero(table.column("episode_index").to_numpy() == episode)
    change(ts, rows)
    index = table.schema.get_field_index("timestamp")
    pq.write_table(table.set_column(index, "timestamp", pa.array(ts, pa.float32())), shard)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda ts, rows: ts.__setitem__(rows[4], np.nan),
            r"non-finite timestamp \(nan\) at its frame 4",
        ),
        (lambda ts, rows: ts.__setitem__(rows[6], ts[rows[2]]), r"do not rise at its frame 6"),
        (lambda ts, rows: ts.__setitem__(rows[3], ts[rows[2]]), r"do not rise at its frame 3"),
    ],
    ids=["nan", "backwards", "repeated"],
)
def test_bad_frame_timestamps_name_the_file_episode_and_frame(make_synth, change, message):
    root = make_synth(episodes=2, seconds=1.0)
    _rewrite_timestamps(root, 1, change)
    ds = LeRobotDataset.open(root)
    assert len(ds.load_episode(0).timestamps) == 10  # the other episode is fine
    with pytest.raises(DatasetError, match=r"file-000\.parquet: episode 1.*" + message):
        ds.load_episode(1)

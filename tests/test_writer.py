"""The writer: exact column types, frame placement, untouched source, atomic failure."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_validation import full_staging, stage

from episcribe.errors import DatasetError, UserError
from episcribe.lerobot import language as L
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.lerobot.writer import MARKER, write_annotated
from episcribe.pipeline.staging import MODULES, read_rows, rows_from, staging_file, write_rows
from episcribe.pipeline.validation import validate_staging

USER_TOOL = {"type": "function", "function": {"name": "wave", "parameters": {"type": "object"}}}


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def stage_all(ds, staging: Path, episodes) -> None:
    """Every style: the valid module set, plus a trace row (no module emits it yet)."""
    for i in episodes:
        ep = ds.load_episode(i)
        rows = full_staging(ep, ds.cameras)
        stage(staging, i, rows)
    report = validate_staging(ds, staging, episodes, MODULES)
    assert report.problems == [], report.to_text()
    for i in episodes:
        ep = ds.load_episode(i)
        path = staging_file(staging, i, "vqa")
        trace = L.make_row("assistant", "[[10, 10], [20, 25]]", "trace", ep.timestamps[7])
        trace["camera"] = ds.cameras[0]
        write_rows(path, read_rows(path) + [trace])


@pytest.fixture(scope="module")
def written(g1_source, tmp_path_factory):
    ds = LeRobotDataset.open(g1_source)
    tmp = tmp_path_factory.mktemp("writer")
    before = hashes(g1_source)
    stage_all(ds, tmp / "staging", ds.episode_indices())
    dest = tmp / "annotated"
    manifest = write_annotated(
        ds, rows_from(tmp / "staging", MODULES), ds.episode_indices(), MODULES, dest
    )
    return {
        "ds": ds,
        "dest": dest,
        "staging": tmp / "staging",
        "manifest": manifest,
        "before": before,
    }


def _shards(root: Path) -> list[Path]:
    return sorted((root / "data").rglob("*.parquet"))


def _expected(staging: Path, episode: int):
    """The staged rows as written: a refreshed plan (plan_update) takes the place of the
    plan module's plan row at its timestamp; keystate and snap rows stay in staging."""
    staged = {m: read_rows(staging_file(staging, episode, m)) for m in MODULES}
    refreshed = {r["timestamp"] for r in staged["plan_update"] if r["style"] == "plan"}
    rows = [
        r
        for m in MODULES
        for r in staged[m]
        if not (m == "plan" and r["style"] == "plan" and r["timestamp"] in refreshed)
        and r["style"] not in L.STAGING_STYLES
    ]
    assert any(r["style"] in L.STAGING_STYLES for rows in staged.values() for r in rows)
    assert refreshed and len(rows) < sum(map(len, staged.values())), "nothing was superseded"
    persistent = sorted(
        (r for r in rows if L.column_for_style(r["style"]) == L.PERSISTENT),
        key=L.persistent_sort_key,
    )
    events = [r for r in rows if L.column_for_style(r["style"]) == L.EVENTS]
    return persistent, events


def test_source_files_are_byte_identical_after_a_write(written, g1_source):
    assert hashes(g1_source) == written["before"]


def test_language_columns_have_exactly_the_spec_types(written):
    for shard in _shards(written["dest"]):
        schema = pq.read_schema(shard)
        assert schema.field(L.PERSISTENT).type == L.PERSISTENT_COLUMN
        assert schema.field(L.EVENTS).type == L.EVENT_COLUMN
        # field-by-field, nullability included (list equality ignores item names)
        for column, row_type in ((L.PERSISTENT, L.PERSISTENT_ROW), (L.EVENTS, L.EVENT_ROW)):
            got = schema.field(column).type.value_type
            assert [(f.name, f.type, f.nullable) for f in got] == [
                (f.name, f.type, f.nullable) for f in row_type
            ]
        assert schema.names[-2:] == [L.PERSISTENT, L.EVENTS]


def test_persistent_slice_is_the_sorted_staging_rows_on_every_frame(written):
    for shard in _shards(written["dest"]):
        table = pq.read_table(shard)
        episodes = table.column("episode_index").to_numpy()
        persistent = table.column(L.PERSISTENT).to_pylist()
        for ep in np.unique(episodes):
            slices = [persistent[i] for i in np.flatnonzero(episodes == ep)]
            assert all(s == slices[0] for s in slices)
            expected, _ = _expected(written["staging"], int(ep))
            assert [L.from_arrow_row(v) for v in slices[0]] == expected


def test_each_event_row_is_on_its_frame_only(written):
    for shard in _shards(written["dest"]):
        table = pq.read_table(shard)
        episodes = table.column("episode_index").to_numpy()
        ts = table.column("timestamp").to_numpy()
        events = table.column(L.EVENTS).to_pylist()
        for ep in np.unique(episodes):
            _, expected = _expected(written["staging"], int(ep))
            by_ts: dict[float, list] = {}
            for r in sorted(expected, key=L.event_sort_key):
                by_ts.setdefault(float(np.float32(r["timestamp"])), []).append(r)
            idx = np.flatnonzero(episodes == ep)
            placed = 0
            for i in idx:
                want = [{**r, "timestamp": None} for r in by_ts.get(float(ts[i]), [])]
                assert [L.from_arrow_row(v) for v in events[i]] == want
                placed += len(events[i])
            assert placed == len(expected)  # every event landed, incl. trace and speech atoms
            assert {r["style"] for r in expected} == {None, "interjection", "vqa", "trace"}


def test_every_original_column_equals_the_source(written, g1_source):
    for src in _shards(g1_source):
        out = pq.read_table(written["dest"] / src.relative_to(g1_source))
        orig = pq.read_table(src)
        assert out.select(orig.column_names).equals(orig)
        assert out.num_rows == orig.num_rows


def test_one_row_group_per_episode(written):
    for shard in _shards(written["dest"]):
        pf = pq.ParquetFile(shard)
        groups = [
            np.unique(pf.read_row_group(i, columns=["episode_index"]).column(0).to_numpy())
            for i in range(pf.num_row_groups)
        ]
        assert all(len(g) == 1 for g in groups)
        assert len({int(g[0]) for g in groups}) == pf.num_row_groups


def test_info_json_gains_the_features_and_the_say_tool(written, g1_source):
    info = json.loads((written["dest"] / "meta" / "info.json").read_text())
    src = json.loads((g1_source / "meta" / "info.json").read_text())
    for name in L.LANGUAGE_COLUMNS:
        assert info["features"][name] == {"dtype": "language", "shape": [1], "names": None}
    assert info["tools"] == [L.SAY_TOOL]
    assert {k: v for k, v in info.items() if k not in ("features", "tools")} == {
        k: v for k, v in src.items() if k not in ("features", "tools")
    }


def test_new_root_links_videos_and_meta_and_rewrites_shards(written, g1_source):
    dest = written["dest"]
    shards = set(_shards(g1_source))
    for src in (p for p in g1_source.rglob("*") if p.is_file()):
        out = dest / src.relative_to(g1_source)
        if src in shards or src.name == "info.json":
            assert not os.path.samefile(src, out)
        else:  # videos, tasks, episodes: hard links (same filesystem here)
            assert os.path.samefile(src, out)
    assert (dest / MARKER).is_file()
    assert not [p for p in dest.rglob(".*") if p.name != MARKER]  # no temporary files
    m = written["manifest"]
    assert m["destination"] == str(dest) and m["episodes"] == [0, 1, 2]
    assert m["files_written"] == [
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
        "meta/info.json",
        "meta/episcribe.json",
    ]
    assert m["files_linked"] == 4 and m["files_copied"] == 0
    # 10 staged persistent rows per episode (keystate and snap rows stay in staging), one
    # plan row superseded by the refreshed plan.
    assert m["events_unplaced"] == 0 and m["rows"][L.PERSISTENT] == 3 * 9


def test_rewriting_into_a_previous_output_gives_identical_files(written, tmp_path):
    first = hashes(written["dest"])
    first.pop("meta/episcribe.json")  # says when it was written
    ds = written["ds"]
    write_annotated(
        ds, rows_from(written["staging"], MODULES), ds.episode_indices(), MODULES, written["dest"]
    )
    again = hashes(written["dest"])
    again.pop("meta/episcribe.json")
    assert again == first


def test_provenance_says_what_produced_the_rows(written):
    record = json.loads((written["dest"] / "meta" / "episcribe.json").read_text())
    assert record["tool"] == "episcribe" and record["version"]
    assert record["episodes_annotated"] == [0, 1, 2] and record["modules"] == list(MODULES)
    assert record["written_at"].startswith("20")


def test_in_place_drops_legacy_columns_keeps_user_tools(g1_copy, tmp_path):
    shard = g1_copy / "data" / "chunk-000" / "file-000.parquet"
    t = pq.read_table(shard)
    t = t.append_column("subtask_index", pa.array(np.zeros(t.num_rows, dtype=np.int64)))
    t = t.append_column("tools", pa.array(["[]"] * t.num_rows))
    hf = {"info": {"features": {"subtask_index": {"dtype": "int64", "_type": "Value"}}}}
    t = t.replace_schema_metadata({"huggingface": json.dumps(hf)})
    pq.write_table(t, shard)
    info_path = g1_copy / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["tools"] = [USER_TOOL]
    info_path.write_text(json.dumps(info))
    ds = LeRobotDataset.open(g1_copy)
    stage_all(ds, tmp_path / "staging", [0])
    manifest = write_annotated(ds, rows_from(tmp_path / "staging", MODULES), [0], MODULES, None)
    assert manifest["in_place"] and manifest["destination"] == str(g1_copy.resolve())
    out = pq.read_table(shard)
    assert "subtask_index" not in out.column_names and "tools" not in out.column_names
    features = json.loads(out.schema.metadata[b"huggingface"])["info"]["features"]
    assert set(features) == set(L.LANGUAGE_COLUMNS)  # HF features follow the columns
    assert out.select(t.column_names[:-2]).equals(t.select(t.column_names[:-2]))
    # episode 1 shares the shard but was not annotated, and had no rows: none now
    ep1 = out.filter(pa.compute.equal(out.column("episode_index"), 1))
    assert all(v == [] for v in ep1.column(L.PERSISTENT).to_pylist())
    assert all(v == [] for v in ep1.column(L.EVENTS).to_pylist())
    tools = json.loads(info_path.read_text())["tools"]
    assert tools == [USER_TOOL, L.SAY_TOOL]
    # a second in-place run replaces the language columns instead of duplicating them
    write_annotated(
        LeRobotDataset.open(g1_copy), rows_from(tmp_path / "staging", MODULES), [0], MODULES, None
    )
    assert pq.read_schema(shard).names.count(L.PERSISTENT) == 1
    assert json.loads(info_path.read_text())["tools"] == [USER_TOOL, L.SAY_TOOL]


def test_unknown_style_fails_before_any_file_is_written(g1_copy, tmp_path):
    ds = LeRobotDataset.open(g1_copy)
    stage_all(ds, tmp_path / "staging", [0, 2])
    path = staging_file(tmp_path / "staging", 2, "plan")
    rows = read_rows(path)
    rows[0]["style"] = "narration"
    write_rows(path, rows)
    before = hashes(g1_copy)
    with pytest.raises(UserError, match="narration"):
        write_annotated(ds, rows_from(tmp_path / "staging", MODULES), [0, 2], MODULES, None)
    with pytest.raises(UserError, match="narration"):
        write_annotated(
            ds, rows_from(tmp_path / "staging", MODULES), [0, 2], MODULES, tmp_path / "out"
        )
    assert hashes(g1_copy) == before
    assert not (tmp_path / "out").exists()


def test_a_missing_staging_file_refuses_the_write_and_names_it(g1_copy, tmp_path):
    """A module's rows are never dropped in silence: no file of the dataset is touched."""
    ds = LeRobotDataset.open(g1_copy)
    rows = full_staging(ds.load_episode(2), ds.cameras)
    stage(tmp_path / "staging", 2, {m: rows[m] for m in ("signals", "plan")})
    with pytest.raises(UserError, match=r"episode 2: no staging file .*interjections\.jsonl"):
        write_annotated(
            ds, rows_from(tmp_path / "staging", MODULES), [2], MODULES, tmp_path / "out"
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["source", "inside", "foreign"])
def test_unsafe_destinations_are_refused(g1_copy, tmp_path, where):
    ds = LeRobotDataset.open(g1_copy)
    dest = {
        "source": g1_copy,
        "inside": g1_copy / "annotated",
        "foreign": tmp_path / "foreign",
    }[where]
    if where == "foreign":
        dest.mkdir()
        (dest / "notes.txt").write_text("mine")
    before = hashes(g1_copy)
    with pytest.raises(UserError):
        write_annotated(ds, rows_from(tmp_path / "staging", MODULES), [], MODULES, dest)
    assert hashes(g1_copy) == before
    if where == "foreign":
        assert os.listdir(dest) == ["notes.txt"]
    else:
        assert not (g1_copy / "annotated").exists()


def test_failure_mid_write_leaves_no_partial_file(g1_copy, tmp_path):
    ds = LeRobotDataset.open(g1_copy)
    stage_all(ds, tmp_path / "staging", [0, 2])
    bad = g1_copy / "data" / "chunk-000" / "file-001.parquet"
    bad.write_bytes(bad.read_bytes()[:1000])  # the second shard cannot be read
    before = hashes(g1_copy)
    with pytest.raises(DatasetError, match="file-001.parquet"):
        write_annotated(
            ds, rows_from(tmp_path / "staging", MODULES), [0, 2], MODULES, tmp_path / "out"
        )
    assert hashes(g1_copy) == before
    out = tmp_path / "out"
    assert not (out / "data" / "chunk-000" / "file-001.parquet").exists()
    assert not [p for p in out.rglob(".*") if p.name != MARKER]  # no temporary files
    assert not (out / "meta" / "info.json").exists()  # written last, never half a dataset
    # All or nothing: the shard that was written is not put in place alone.
    assert not (out / "data" / "chunk-000" / "file-000.parquet").exists()


def test_synthetic_two_camera_dataset_round_trip(synth_small, tmp_path):
    """Many episodes per shard and two cameras: VQA rows per camera, a row group each."""
    ds = LeRobotDataset.open(synth_small)
    before = hashes(synth_small)
    stage_all(ds, tmp_path / "staging", ds.episode_indices())
    write_annotated(
        ds,
        rows_from(tmp_path / "staging", MODULES),
        ds.episode_indices(),
        MODULES,
        tmp_path / "out",
    )
    assert hashes(synth_small) == before
    total = 0
    for src in _shards(synth_small):
        pf = pq.ParquetFile(tmp_path / "out" / src.relative_to(synth_small))
        episodes = pf.read(columns=["episode_index"]).column(0).to_numpy()
        assert pf.num_row_groups == len(np.unique(episodes))
        table = pf.read()
        cams = {e["camera"] for frame in table.column(L.EVENTS).to_pylist() for e in frame}
        assert set(ds.cameras) <= cams
        total += table.num_rows
    assert total == sum(ds.load_episode(i).timestamps.size for i in ds.episode_indices())


@pytest.mark.parametrize("in_place", [True, False])
def test_episodes_outside_the_selection_keep_their_rows(g1_copy, tmp_path, in_place):
    """Annotating only episode 0 of an annotated dataset changes episode 0's rows alone."""
    ds = LeRobotDataset.open(g1_copy)
    stage_all(ds, tmp_path / "staging", ds.episode_indices())
    write_annotated(
        ds, rows_from(tmp_path / "staging", MODULES), ds.episode_indices(), MODULES, None
    )
    annotated = {p.name: pq.read_table(p) for p in _shards(g1_copy)}

    rows = read_rows(staging_file(tmp_path / "staging", 0, "plan"))
    for row in rows:
        if row["style"] == "subtask":
            row["content"] = "a new subtask text"
    write_rows(staging_file(tmp_path / "staging", 0, "plan"), rows)
    out = None if in_place else tmp_path / "out"
    manifest = write_annotated(
        LeRobotDataset.open(g1_copy), rows_from(tmp_path / "staging", MODULES), [0], MODULES, out
    )
    assert manifest["rows_kept_of_other_episodes"] > 0
    root = g1_copy if in_place else out
    for name, before in annotated.items():
        after = pq.read_table(root / "data" / "chunk-000" / name)
        for episode in (1, 2):
            mask = pa.compute.equal(before.column("episode_index"), episode)
            for column in L.LANGUAGE_COLUMNS:
                assert (
                    after.filter(mask).column(column).to_pylist()
                    == before.filter(mask).column(column).to_pylist()
                )
        ep0 = after.filter(pa.compute.equal(after.column("episode_index"), 0))
        if ep0.num_rows:
            texts = {r["content"] for r in ep0.column(L.PERSISTENT)[0].as_py()}
            assert "a new subtask text" in texts


def test_a_resumed_write_removes_what_a_killed_write_left(g1_copy, tmp_path):
    """kill -9 mid-write leaves temporary siblings (atomic_path cannot clean up); the
    next write removes those of dead processes and no other file."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    left = [
        g1_copy / "data" / "chunk-000" / f".file-002.parquet.tmp-{dead}-0123abcd",
        g1_copy / "meta" / f".info.json.tmp-{dead}-89abcdef",
    ]
    for path in left:
        path.write_bytes(b"half a file")
    mine = g1_copy / "meta" / ".notes.tmp-keep"
    mine.write_text("the user's own dot file")
    ds = LeRobotDataset.open(g1_copy)
    stage_all(ds, tmp_path / "staging", [0])
    write_annotated(ds, rows_from(tmp_path / "staging", MODULES), [0], MODULES, None)
    assert not any(p.exists() for p in left)
    assert mine.read_text() == "the user's own dot file"
    assert [p.name for p in g1_copy.rglob(".*.tmp-*")] == [mine.name]

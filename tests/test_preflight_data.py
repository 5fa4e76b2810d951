"""Preflight reads the data: bad data is refused before any job, with no model call.

Each case breaks a small synthetic dataset the way published datasets are broken, runs
the installed `episcribe` against a fake model server of its own (backend openai, so
the server's request log counts every model call), and checks the exit, the message
(the file and episode at fault) and that nothing was asked or written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_cli import episcribe
from test_fake_server import read_log, run_fake

SHARD = Path("data/chunk-000/file-000.parquet")
EPISODES = Path("meta/episodes/chunk-000/file-000.parquet")


@pytest.fixture
def source(make_synth) -> Path:
    return make_synth(episodes=3, seconds=1.0, fps=10, episodes_per_file=2)


def refused_before_any_call(root: Path, tmp_path: Path) -> str:
    """Run `episcribe` on ``root``; assert it failed with no model call and wrote nothing;
    return its message."""
    work = tmp_path / "work"
    work.mkdir()
    with run_fake(tmp_path) as (base, log):
        out = episcribe(
            "--config", f"dataset.root={root}", "vlm.backend=openai", f"vlm.api_base={base}",
            "vlm.model_id=fake/model", cwd=work,
        )  # fmt: skip
        calls = read_log(log)
    assert out.returncode != 0
    assert calls == [], "a model call before the data was checked"
    assert list(work.iterdir()) == [], "preflight must write nothing"
    assert "Traceback" not in out.stderr, out.stderr
    return out.stderr


def rewrite(path: Path, change) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def test_fps_that_does_not_match_the_timestamps_is_refused(source, tmp_path):
    info = json.loads((source / "meta/info.json").read_text())
    info["fps"] = 30  # the frames are 100 ms apart
    (source / "meta/info.json").write_text(json.dumps(info))
    message = refused_before_any_call(source, tmp_path)
    assert "fps 30" in message and "100.0 ms" in message and "file-000.parquet" in message


def test_a_gap_in_episode_indices_is_refused(source, tmp_path):
    def renumber(table: pa.Table) -> pa.Table:
        column = table.column("episode_index")
        renumbered = pc.if_else(pc.equal(column, 2), 3, column)
        return table.set_column(
            table.schema.get_field_index("episode_index"), "episode_index", renumbered
        )

    rewrite(source / EPISODES, renumber)
    rewrite(source / "data/chunk-000/file-001.parquet", renumber)
    message = refused_before_any_call(source, tmp_path)
    assert "gap (no episode 2)" in message and "meta/episodes" in message


def test_a_task_text_that_is_not_utf8_is_refused(source, tmp_path):
    path = source / "meta/tasks.parquet"
    table = pq.read_table(path)
    name, kind = next(
        (f.name, f.type)
        for f in table.schema
        if pa.types.is_large_string(f.type) or pa.types.is_string(f.type)
    )
    raw = pa.large_binary() if pa.types.is_large_string(kind) else pa.binary()
    bad = pa.array([b"pick up the \xff\xfe bottle"] * table.num_rows, raw).view(kind)
    pq.write_table(table.set_column(table.schema.get_field_index(name), name, bad), path)
    message = refused_before_any_call(source, tmp_path)
    assert "tasks.parquet" in message and "not valid UTF-8" in message and "row 0" in message


def test_a_truncated_data_shard_is_refused(source, tmp_path):
    path = source / SHARD
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = refused_before_any_call(source, tmp_path)
    assert str(path) in message and "not readable as parquet" in message
    assert "episodes 0, 1" in message


def test_an_episode_without_frames_is_refused(source, tmp_path):
    rewrite(source / SHARD, lambda t: t.filter(pc.not_equal(t.column("episode_index"), 1)))
    message = refused_before_any_call(source, tmp_path)
    assert (
        "without frames" in message and "1 (file-000.parquet: 0 frames, meta length 10)" in message
    )


def test_every_problem_class_is_one_line_of_one_message(source, tmp_path):
    info = json.loads((source / "meta/info.json").read_text())
    info["fps"] = 30
    (source / "meta/info.json").write_text(json.dumps(info))
    rewrite(source / SHARD, lambda t: t.filter(pc.not_equal(t.column("episode_index"), 1)))
    lines = refused_before_any_call(source, tmp_path).strip().splitlines()
    assert len(lines) == 3, lines
    assert "without frames" in lines[1] and "fps 30" in lines[2]

"""A dataset that lacks some files is annotated over the episodes it has.

Published datasets often lack some mp4 files. With dataset.only_episodes naming the
episodes whose files exist, the run goes through (real `episcribe`, fake model server),
the other episodes keep their rows in the output, and the missing file stays missing
there, said once at the end of the run.
"""

from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
from test_cli import EPISCRIBE, env, fake_config

from episcribe.lerobot.language import LANGUAGE_COLUMNS

CAMERA = "observation.images.top"
MISSING = f"videos/{CAMERA}/chunk-000/file-001.mp4"  # episodes 2 and 3


def run(dataset, work, *config):
    return subprocess.run(
        [EPISCRIBE, "--config", *fake_config(dataset), *config],
        cwd=work, env=env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_only_episodes_over_the_present_files_annotates_them_and_keeps_the_rest(
    make_synth, tmp_path
):
    source = make_synth(episodes=4, seconds=2.0, fps=10, episodes_per_file=2)
    (source / MISSING).unlink()
    work = tmp_path / "work"
    work.mkdir()

    refused = run(source, work)
    assert refused.returncode != 0
    assert "file-001.mp4" in refused.stderr and "episode(s) 2, 3" in refused.stderr

    done = run(source, work, "dataset.only_episodes=[0,1]")
    assert done.returncode == 0, done.stderr[-3000:]
    out = work / "results" / source.name / "annotated"
    assert not (out / MISSING).exists()
    assert (out / f"videos/{CAMERA}/chunk-000/file-000.mp4").exists()
    annotated = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert annotated.column("language_persistent").to_pylist()[0], "episode 0 has no rows"
    other = pq.read_table(out / "data/chunk-000/file-001.parquet")
    source_rows = pq.read_table(source / "data/chunk-000/file-001.parquet")
    assert other.drop_columns(list(LANGUAGE_COLUMNS)).equals(source_rows)
    manifest = json.loads((work / "results" / source.name / "write/manifest.json").read_text())
    assert manifest["missing_in_source"] == [MISSING]
    said = [
        line for line in (done.stdout + done.stderr).splitlines() if "source dataset lacks" in line
    ]
    assert len(said) == 1, said

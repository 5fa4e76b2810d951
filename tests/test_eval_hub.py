"""import-wgo --repo-id: the real huggingface_hub client over real HTTP to the Hub stand-in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hub_standin import Standin
from wgo_fixture import FIXTURE, write_wgo


@pytest.fixture
def standin(tmp_path, monkeypatch):
    hub = Standin(tmp_path / "hub")
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield hub
    hub.stop()


def import_wgo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "episcribe.command.cli", "import-wgo", *args],
        cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip


def test_import_wgo_downloads_the_benchmark_from_the_hub(standin, tmp_path: Path):
    repo = tmp_path / "repo"
    write_wgo(repo / "data" / "test-00000-of-00001.parquet", FIXTURE)
    (repo / "README.md").write_text("---\nlicense: cc-by-nc-sa-4.0\n---\n# a stand-in\n")
    standin.publish("macrodata/WGO-Bench", repo)
    proc = import_wgo("--repo-id", "macrodata/WGO-Bench", "--out", "wgo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "imported 4 episodes (0 rows skipped)" in proc.stdout
    gold = [json.loads(x) for x in (tmp_path / "wgo" / "gold.jsonl").read_text().splitlines()]
    assert [g["id"] for g in gold] == [row.id for row in FIXTURE]
    assert (tmp_path / "wgo" / "wgo_bench" / "meta" / "info.json").is_file()
    # No such repo: one line naming it, no traceback.
    proc = import_wgo("--repo-id", "macrodata/nope", "--out", "other", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("episcribe: Hub dataset macrodata/nope was not found")
    assert "Traceback" not in proc.stderr


def test_a_file_that_is_not_wgo_format_is_one_line(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "video": [b""]}), tmp_path / "x.parquet")
    proc = import_wgo("x.parquet", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "episcribe: x.parquet lacks column(s) instruction, segments, metadata: not a WGO-format "
        "file (expected id, video, instruction, segments, metadata)"
    )

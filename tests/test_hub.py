"""Hub in and out: the real huggingface_hub client over real HTTP to a Hub stand-in.

The stand-in (tests/hub_standin.py) is its own process: olah serves the repositories'
reads, the stand-in the upload endpoints. The workflow reaches it through HF_ENDPOINT,
the switch that points huggingface_hub at the real Hub. Xet storage has no stand-in, so
uploads use the Git LFS protocol (HF_HUB_DISABLE_XET=1).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hub_standin import Standin
from smk import Workspace

TOKEN = "hf_standinSecretToken0123456789"
REPO = "lerobot/g1_bottle"
FAST = dict(vqa__enabled="false", interjections__enabled="false", plan__n_task_rephrasings=0)


def tree(root: Path) -> dict[str, str]:
    """Every file's sha256 below root, hidden paths and the card left out."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def standin(tmp_path, monkeypatch):
    hub = Standin(tmp_path / "hub", token=TOKEN)
    # Every huggingface_hub client below (snakemake's jobs, subprocesses) talks to it.
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no saved login
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield hub
    hub.stop()


def hub_workspace(tmp_path: Path, g1_source: Path, **config) -> Workspace:
    # dataset__root=null: the dataset comes from the Hub.
    return Workspace(tmp_path / "ws", g1_source, dataset__root="null", **FAST, **config)


def push_workspace(tmp_path: Path, g1_source: Path) -> Workspace:
    """Annotates lerobot/g1_bottle from the Hub and pushes it to me/g1_annotated."""
    return hub_workspace(
        tmp_path,
        g1_source,
        dataset__repo_id=REPO,
        output__push_to_hub="true",
        output__new_repo_id="me/g1_annotated",
    )


def download(repo_id: str, dest: Path) -> Path:
    """snapshot_download in a fresh process (huggingface_hub reads HF_ENDPOINT at import)."""
    code = (
        "import sys; from huggingface_hub import snapshot_download; "
        "snapshot_download(sys.argv[1], repo_type='dataset', local_dir=sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", code, repo_id, str(dest)], check=True)
    return dest


def test_a_hub_dataset_is_downloaded_once_and_annotated_as_owner__name(
    standin, g1_source, tmp_path
):
    standin.publish(REPO, g1_source)
    ws = hub_workspace(tmp_path, g1_source, dataset__repo_id=REPO)
    ws.run()
    cached = ws.root / "resources" / "hub" / "lerobot__g1_bottle" / "main"
    assert tree(cached) == tree(g1_source)  # meta, 2 data files, 2 videos: byte for byte
    annotated = ws.root / "results" / "lerobot__g1_bottle" / "annotated"
    table = pq.read_table(annotated / "data" / "chunk-000" / "file-000.parquet")
    assert {"language_persistent", "language_events"} <= set(table.column_names)
    assert len(table.column("language_persistent")[0]) > 0
    assert not (annotated / ".cache").exists()  # huggingface_hub's metadata stays behind
    downloads = [r for r in standin.requests() if "/resolve/" in r["path"]]
    assert downloads

    before = len(standin.requests())
    again = ws.run()
    assert again.rules == []
    assert len(standin.requests()) == before  # the second run asked the Hub nothing


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "Hub dataset lerobot/g1_other was not found"),
        ("gated", "Hub dataset lerobot/g1_other is gated: accept its conditions"),
        ("offline", "cannot reach the Hub to download Hub dataset lerobot/g1_other"),
    ],
)
def test_hub_failures_stop_the_run_with_one_line_naming_the_repo(
    case, expected, standin, g1_source, tmp_path
):
    if case == "gated":
        standin.publish("lerobot/g1_other", g1_source, gated=True)
    if case == "offline":
        standin.stop()
    ws = hub_workspace(tmp_path, g1_source, dataset__repo_id="lerobot/g1_other")
    run = ws.run(check=False)
    assert run.returncode != 0
    assert expected in run.output
    assert "Traceback" not in run.output


def test_pushed_dataset_downloads_byte_identical_and_the_token_is_never_written(
    standin, g1_source, tmp_path, monkeypatch
):
    standin.publish(REPO, g1_source)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    ws = push_workspace(tmp_path, g1_source)
    run = ws.run()
    assert "push_dataset" in run.rules
    annotated = ws.root / "results" / "lerobot__g1_bottle" / "annotated"
    card = (annotated / "README.md").read_text()
    assert "me/g1_annotated" in card and "Qwen/Qwen3.6-27B" in card and "plan" in card

    fetched = download("me/g1_annotated", tmp_path / "fetched")
    assert tree(fetched) == tree(annotated)

    assert TOKEN not in run.output
    for path in ws.root.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_a_push_without_a_valid_token_is_one_line_saying_how_to_log_in(
    standin, g1_source, tmp_path, monkeypatch
):
    standin.publish(REPO, g1_source)
    ws = push_workspace(tmp_path, g1_source)
    run = ws.run(check=False)
    assert run.returncode != 0
    assert "needs a token with write access" in run.output and "HF_TOKEN" in run.output
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    run = ws.run(check=False)
    assert "the Hub refused to push Hub dataset me/g1_annotated (HTTP 401)" in run.output
    assert "Traceback" not in run.output


PUSH = (
    "import sys; from episcribe.lerobot.hub import push_dataset; "
    "push_dataset(sys.argv[1], sys.argv[2], private=False, commit_message='m', card='card')"
)


def test_an_interrupted_push_resumes_without_sending_stored_objects_again(
    g1_copy, tmp_path, monkeypatch
):
    # 40 MB at 8 MB/s: the push is killed while this file is on its way.
    big = g1_copy / "videos" / "observation.images.cam_high" / "chunk-000" / "file-002.mp4"
    big.write_bytes(os.urandom(40 * 2**20))
    # A dataset pushed as it is (written in place) is the user's own: its README.md stays.
    (g1_copy / "README.md").write_text("my own notes")
    hub = Standin(tmp_path / "hub", token=TOKEN, upload_rate=8 * 2**20)
    try:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.endpoint,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(tmp_path / "hf_home"),
            "HF_TOKEN": TOKEN,
        }
        args = [sys.executable, "-c", PUSH, str(g1_copy), "me/resumed"]
        first = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not hub.lfs_objects() and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        time.sleep(1.5)  # let the stand-in drain what reached it
        stored = hub.lfs_objects()
        big_oid = hashlib.sha256(big.read_bytes()).hexdigest()
        assert stored and big_oid not in stored  # interrupted half-way
        n_before = len(hub.requests())

        subprocess.run(args, env=env, check=True, stderr=subprocess.DEVNULL)
        resent = {
            r["path"].rsplit("/", 1)[1]
            for r in hub.requests()[n_before:]
            if r["method"] == "PUT" and r["status"] == 200
        }
        assert big_oid in resent
        assert not resent & stored  # nothing the Hub already had was sent again
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        fetched = download("me/resumed", tmp_path / "fetched")
        assert (g1_copy / "README.md").read_text() == "my own notes"
        assert (fetched / "README.md").read_text() == "card"
        assert tree(fetched) == {**tree(g1_copy), "README.md": tree(fetched)["README.md"]}
    finally:
        hub.stop()

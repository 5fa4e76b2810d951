"""Hub in and out: the real huggingface_hub client over real HTTP to a Hub stand-in.

The stand-in (tests/hub_standin.py) is its own process: olah serves the repositories'
reads, the stand-in the upload endpoints. The workflow reaches it through HF_ENDPOINT,
the switch that points huggingface_hub at the real Hub. Xet storage has no stand-in, so
uploads use the Git LFS protocol (HF_HUB_DISABLE_XET=1).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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


def download(repo_id: str, dest: Path, revision: str = "main") -> Path:
    """snapshot_download in a fresh process (huggingface_hub reads HF_ENDPOINT at import)."""
    code = (
        "import sys; from huggingface_hub import snapshot_download; "
        "snapshot_download(sys.argv[1], repo_type='dataset', local_dir=sys.argv[2], "
        "revision=sys.argv[3])"
    )
    subprocess.run([sys.executable, "-c", code, repo_id, str(dest), revision], check=True)
    return dest


def newer_main(standin: Standin, source: Path, tmp_path: Path) -> str:
    """A commit on main after the tagged one, with a changed info.json; its sha."""
    newer = tmp_path / "newer"
    shutil.copytree(source, newer)
    info = json.loads((newer / "meta" / "info.json").read_text())
    (newer / "meta" / "info.json").write_text(json.dumps(info | {"robot_type": "newer"}))
    return standin.commit_files(REPO, newer, "newer main")


def test_a_hub_dataset_is_read_at_its_version_tag_once_and_annotated_as_owner__name(
    standin, g1_source, tmp_path
):
    tagged = standin.publish(REPO, g1_source)  # tagged v3.0, as LeRobot's datasets are
    newer = newer_main(standin, g1_source, tmp_path)
    assert standin.refs(REPO) == {"branches": {"main": newer}, "tags": {"v3.0": tagged}}
    ws = hub_workspace(tmp_path, g1_source, dataset__repo_id=REPO)
    ws.run()
    # no dataset.revision: the commit LeRobotDataset(REPO) would train on, not main's
    cached = ws.root / "resources" / "hub" / "lerobot__g1_bottle" / "version-tag"
    assert tree(cached) == tree(g1_source)  # meta, 2 data files, 2 videos: byte for byte
    annotated = ws.root / "results" / "lerobot__g1_bottle" / "annotated"
    source = json.loads((annotated / "meta" / "episcribe.json").read_text())["source"]
    assert source == {"repo_id": REPO, "revision": None, "ref": "v3.0", "commit": tagged}
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
    # LeRobotDataset("me/g1_annotated") loads the commit its v3.0 tag names: ours
    receipt = json.loads((ws.root / "results/lerobot__g1_bottle/push/receipt.json").read_text())
    refs = standin.refs("me/g1_annotated")
    assert refs["tags"] == {"v3.0": receipt["commit"]} and receipt["tag"] == "v3.0"
    assert refs["branches"]["main"] == receipt["commit"]
    assert "tag v3.0 points at it, so LeRobotDataset('me/g1_annotated') loads it" in run.output

    assert TOKEN not in run.output
    for path in ws.root.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_pushing_back_to_the_source_repo_moves_its_version_tag_to_the_pushed_commit(
    standin, g1_source, tmp_path, monkeypatch
):
    published = standin.publish(REPO, g1_source)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    ws = hub_workspace(tmp_path, g1_source, dataset__repo_id=REPO, output__push_to_hub="true")
    ws.run()
    receipt = json.loads((ws.root / "results/lerobot__g1_bottle/push/receipt.json").read_text())
    assert receipt["commit"] != published
    assert standin.refs(REPO) == {
        "branches": {"main": receipt["commit"]},
        "tags": {"v3.0": receipt["commit"]},  # moved off the unannotated commit
    }
    # what LeRobot now loads is the annotated data
    fetched = download(REPO, tmp_path / "fetched", revision="v3.0")
    table = pq.read_table(fetched / "data" / "chunk-000" / "file-000.parquet")
    assert "language_persistent" in table.column_names


FETCH = """
import sys
from episcribe.lerobot import hub
from episcribe.errors import HubError
repo_id, revision = sys.argv[1], sys.argv[2] or None
dest = hub.local_dir(repo_id, revision)
try:
    hub.download_dataset(repo_id, revision, dest)
except HubError as exc:
    sys.exit(str(exc))
print(hub.download_record(dest)["commit"])
"""


def fetch(repo_id: str, revision: str, cwd: Path) -> subprocess.CompletedProcess:
    """download_dataset in a fresh process (huggingface_hub reads HF_ENDPOINT at import)."""
    args = [sys.executable, "-c", FETCH, repo_id, revision]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True)


def test_an_explicit_revision_is_read_as_given_and_a_repo_without_version_tags_is_named(
    standin, g1_source, tmp_path
):
    tagged = standin.publish(REPO, g1_source)
    newer = newer_main(standin, g1_source, tmp_path)
    for revision, commit in (("", tagged), ("main", newer), ("v3.0", tagged), (tagged, tagged)):
        assert fetch(REPO, revision, tmp_path).stdout.strip() == commit
    on_main = tmp_path / "resources/hub/lerobot__g1_bottle/main/meta/info.json"
    assert json.loads(on_main.read_text())["robot_type"] == "newer"

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "README.md").write_text("no info.json: published without a version tag")
    standin.publish("me/untagged", plain)
    failed = fetch("me/untagged", "", tmp_path)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "Hub dataset me/untagged has no version tag LeRobot v3.0 can load" in failed.stderr
    assert "its refs: main. Set dataset.revision" in failed.stderr


def test_a_failed_tag_says_the_dataset_is_uploaded_and_the_command_that_fixes_it(
    standin, g1_copy, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    (standin.root / "tags_refused").write_text("me/refused\n")
    args = [sys.executable, "-c", PUSH, str(g1_copy), "me/refused"]
    failed = subprocess.run(args, capture_output=True, text=True)
    assert failed.returncode != 0
    message = failed.stderr.strip().splitlines()[-1]
    assert "Hub dataset me/refused is uploaded (commit " in message
    assert "could not be tagged v3.0" in message and "so LeRobot will not load it" in message
    fix = message.split("run `")[1].rstrip("`")
    assert standin.refs("me/refused")["tags"] == {}
    (standin.root / "tags_refused").write_text("")
    subprocess.run(fix, shell=True, check=True, capture_output=True)  # the fix, as given
    refs = standin.refs("me/refused")
    assert refs["tags"] == {"v3.0": refs["branches"]["main"]}


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

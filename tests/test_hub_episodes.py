"""With dataset.only_episodes, only the files holding those episodes come from the Hub.

Real huggingface_hub over HTTP to the Hub stand-in (tests/hub_standin.py), in a fresh
process as the workflow's own download runs. g1_bottle keeps episodes 0-1 in data and
video files 000 and episode 2 in files 001.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_hub import REPO, standin  # noqa: F401 (a fixture)

SECOND_SHARD = "data/chunk-000/file-001.parquet"  # episode 2 only

DOWNLOAD = (
    "import json, sys; from pathlib import Path; "
    "from episcribe.lerobot.hub import download_dataset; "
    "download_dataset(sys.argv[1], None, Path(sys.argv[2]), json.loads(sys.argv[3]))"
)


def download(dest: Path, episodes) -> None:
    args = [sys.executable, "-c", DOWNLOAD, REPO, str(dest), json.dumps(episodes)]
    subprocess.run(args, check=True, timeout=300)


def test_only_the_selected_episodes_files_are_downloaded_then_more_when_asked(
    standin,  # noqa: F811
    g1_source,
    tmp_path,
):
    standin.publish(REPO, g1_source)
    dest = tmp_path / "hub" / "main"
    download(dest, [0, 1])
    assert (dest / "data/chunk-000/file-000.parquet").is_file()
    assert not (dest / SECOND_SHARD).exists()
    assert not [r for r in standin.requests() if SECOND_SHARD in r["path"]]
    videos = sorted(str(p.relative_to(dest)) for p in (dest / "videos").rglob("*.mp4"))
    assert videos and all(v.endswith("file-000.mp4") for v in videos), videos

    before = len(standin.requests())
    download(dest, [1])  # covered by what is there: no Hub request at all
    assert len(standin.requests()) == before

    download(dest, [2])
    assert (dest / SECOND_SHARD).read_bytes() == (g1_source / SECOND_SHARD).read_bytes()
    assert len(list((dest / "videos").rglob("file-001.mp4"))) == len(videos)
    record = json.loads((dest.parent / "main.json").read_text())
    assert record["episodes"] == [0, 1, 2]

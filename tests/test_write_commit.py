"""A write killed while it puts its files in place is finished by the next run.

The writer runs in a process of its own, in place, over a dataset of many one-episode
shards; it is killed with SIGKILL the moment its commit marker appears, i.e. during the
rename phase, with some shards new and the others (and info.json) old. The next
`episcribe` (a dry run: preflight only) must say it finished that write, and the dataset
must then be whole: every shard with the language columns, info.json declaring them.
"""

from __future__ import annotations

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
from test_cli import episcribe, fake_config

from episcribe.lerobot.file_commit import MARKER
from episcribe.lerobot.language import LANGUAGE_COLUMNS

SHARDS = 120
ATTEMPTS = 10
WRITER = """
import sys
sys.path.insert(0, {tests!r})
from test_writer import stage_all
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.pipeline.staging import MODULES, rows_from
from episcribe.lerobot.writer import write_annotated
ds = LeRobotDataset.open({root!r})
stage_all(ds, __import__("pathlib").Path({staging!r}), [0, 1])
print("staged", flush=True)
write_annotated(ds, rows_from({staging!r}, MODULES), [0, 1], MODULES, None)
"""


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory) -> Path:
    from synth import make_dataset

    return make_dataset(
        tmp_path_factory.mktemp("data") / "shards",
        seed=3, episodes=SHARDS, seconds=3.0, fps=10, episodes_per_file=1,
        cameras=("observation.images.top",), size=(160, 120),
    )  # fmt: skip


def language_columns(shard: Path) -> bool:
    return set(LANGUAGE_COLUMNS) <= set(pq.read_schema(shard).names)


def kill_in_rename_phase(source: Path, work: Path) -> Path | None:
    """A copy of ``source`` whose in-place write was killed mid-commit, some files new and
    others old; or None if the kill came too late (all renames done)."""
    root = work / "dataset"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, root)
    code = WRITER.format(
        tests=str(Path(__file__).parent), root=str(root), staging=str(work / "staging")
    )
    # At the lowest priority the writer yields the CPU to this watcher, which must notice
    # the marker within the milliseconds of the rename phase.
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: os.nice(19),
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "staged"
    marker = root / MARKER
    deadline = time.monotonic() + 120
    while not os.path.exists(marker):  # a tight loop: the phase lasts milliseconds
        if proc.poll() is not None or time.monotonic() > deadline:
            break
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if not marker.exists():
        return None
    shards = sorted((root / "data").rglob("file-*.parquet"))
    info = json.loads((root / "meta" / "info.json").read_text())
    mixed = not all(map(language_columns, shards)) or "language_events" not in info["features"]
    return root if mixed else None


def test_kill_9_in_the_rename_phase_is_finished_by_the_next_run(many_shards, tmp_path):
    for _ in range(ATTEMPTS):
        root = kill_in_rename_phase(many_shards, tmp_path / "work")
        if root is not None:
            break
    else:
        pytest.fail(f"the kill never landed in the rename phase in {ATTEMPTS} attempts")
    shards = sorted((root / "data").rglob("file-*.parquet"))

    work = tmp_path / "run"
    work.mkdir()
    out = episcribe(
        "--dry-run", "--config", *fake_config(root), "output.in_place=true",
        "output.allow_fake_in_place=true", cwd=work,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    first = out.stderr.splitlines()[0]
    assert "interrupted while putting its files in place" in first and str(root) in first
    assert all(language_columns(s) for s in shards)
    info = json.loads((root / "meta" / "info.json").read_text())
    assert set(LANGUAGE_COLUMNS) <= set(info["features"])
    assert not (root / MARKER).exists()
    assert not [p for p in root.rglob(".*pending-*")]

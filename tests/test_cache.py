"""The per-episode cache: same inputs restore; redoing an episode is an explicit act;
an episode with failed model calls is recorded, never cached as done."""

from __future__ import annotations

import subprocess
import sys

from episcribe.pipeline.cache import (
    EpisodeCache,
    digest,
    incomplete_episodes,
    incomplete_runs,
    record_delivery,
    redo,
)
from episcribe.pipeline.staging import staging_file

ROWS = [{"role": "user", "content": "Pick up the cube.", "style": "task_aug", "timestamp": 0.0,
         "camera": None, "tool_calls": None}]  # fmt: skip


def test_same_inputs_same_key_and_any_change_a_new_one():
    cache = EpisodeCache("unused", "plan", digest({"prompts": "a"}))
    key = cache.key("fingerprint", {"plan": ROWS})
    assert key == cache.key("fingerprint", {"plan": ROWS})
    assert key != cache.key("other episode data", {"plan": ROWS})
    assert key != cache.key("fingerprint", {"plan": []})
    assert key != EpisodeCache("unused", "plan", digest({"prompts": "b"})).key("fingerprint", {})


def test_a_deleted_staging_file_is_restored_until_redo_forgets_the_entry(tmp_path):
    cache = EpisodeCache(tmp_path / "cache", "vqa", "job")
    staging = tmp_path / "staging"
    key = cache.key("ep3", {})
    cache.put(key, ROWS)
    cache.deliver(key, ROWS, staging, 3)
    staging_file(staging, 3, "vqa").unlink()  # what Snakemake does before a re-run
    assert cache.get(key) == ROWS

    cache.deliver(key, ROWS, staging, 3)
    assert redo(tmp_path / "cache", staging, "vqa", [3, 4]) == [3]
    assert cache.get(key) is None
    assert not staging_file(staging, 3, "vqa").exists()


def test_redo_keeps_other_episodes_and_modules(tmp_path):
    staging = tmp_path / "staging"
    caches = {m: EpisodeCache(tmp_path / "cache", m, "job") for m in ("plan", "vqa")}
    keys = {}
    for module, cache in caches.items():
        for episode in (1, 2, 12345):
            keys[module, episode] = cache.key(f"ep{episode}", {})
            cache.put(keys[module, episode], ROWS)
            cache.deliver(keys[module, episode], ROWS, staging, episode)
    redo(tmp_path / "cache", staging, "plan", [2])
    assert caches["plan"].get(keys["plan", 2]) is None
    kept = [k for k in keys if k != ("plan", 2)]
    assert all(caches[m].get(keys[m, e]) == ROWS for m, e in kept)
    assert all(staging_file(staging, e, m).exists() for m, e in kept)


def test_incomplete_count_grows_per_incomplete_delivery_and_stays_when_complete(tmp_path):
    root = tmp_path / "cache"
    assert incomplete_runs(root, "plan") == {}
    record_delivery(root, "plan", 7, failed_calls=0, skipped=0)
    assert incomplete_runs(root, "plan") == {}  # never incomplete: no record at all

    record_delivery(root, "plan", 7, failed_calls=3, skipped=4)
    assert incomplete_runs(root, "plan") == {7: 1}
    assert incomplete_episodes(root, "plan") == {7: {"runs": 1, "failed_calls": 3, "skipped": 4}}
    record_delivery(root, "plan", 7, failed_calls=1, skipped=1)
    assert incomplete_runs(root, "plan") == {7: 2}

    # Complete at last: the count (the job's param) stays, the failures are gone.
    record_delivery(root, "plan", 7, failed_calls=0, skipped=0)
    assert incomplete_runs(root, "plan") == {7: 2}
    assert incomplete_episodes(root, "plan") == {}
    # A temporary file a killed write left is no record.
    (root / "plan" / "incomplete" / ".episode_000008.json.tmp-1-abcdef01").write_text("{")
    assert incomplete_runs(root, "plan") == {7: 2}


def test_redo_command_names_what_it_forgot(tmp_path):
    results = tmp_path / "results" / "robot"
    cache = EpisodeCache(results / "cache", "vqa", "job")
    key = cache.key("ep0", {})
    cache.put(key, ROWS)
    cache.deliver(key, ROWS, results / "staging", 0)
    out = subprocess.run(
        [sys.executable, "-m", "episcribe.command.cli", "redo", str(results), "--modules", "vqa",
         "--episodes", "0", "5"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "vqa: 1 episode(s) will be annotated anew: [0]" in out
    assert cache.get(key) is None
    bad = subprocess.run(
        [sys.executable, "-m", "episcribe.command.cli", "redo", str(tmp_path), "--episodes", "0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "has no staging/ directory" in bad.stderr

"""The per-episode cache: same inputs restore, a deleted staging file is annotated anew."""

from __future__ import annotations

from episcribe.cache import EpisodeCache, digest, forget_deleted
from episcribe.staging import staging_file

ROWS = [{"role": "user", "content": "Pick up the cube.", "style": "task_aug", "timestamp": 0.0,
         "camera": None, "tool_calls": None}]  # fmt: skip


def test_same_inputs_same_key_and_any_change_a_new_one():
    cache = EpisodeCache("unused", "plan", digest({"prompts": "a"}))
    key = cache.key("fingerprint", {"plan": ROWS})
    assert key == cache.key("fingerprint", {"plan": ROWS})
    assert key != cache.key("other episode data", {"plan": ROWS})
    assert key != cache.key("fingerprint", {"plan": []})
    assert key != EpisodeCache("unused", "plan", digest({"prompts": "b"})).key("fingerprint", {})


def test_delivered_rows_come_back_until_their_staging_file_is_deleted(tmp_path):
    cache = EpisodeCache(tmp_path / "cache", "vqa", "job")
    staging = tmp_path / "staging"
    key = cache.key("ep3", {})
    cache.put(key, ROWS)
    cache.deliver(key, ROWS, staging, 3)
    assert staging_file(staging, 3, "vqa").exists()

    assert forget_deleted(tmp_path / "cache", staging, ["vqa"]) == 0
    assert cache.get(key) == ROWS  # the staging file is there: keep the entry

    staging_file(staging, 3, "vqa").unlink()
    assert forget_deleted(tmp_path / "cache", staging, ["vqa"]) == 1
    assert cache.get(key) is None  # the user asked for episode 3 anew


def test_forgetting_skips_leftover_temporary_files_and_keeps_other_episodes(tmp_path):
    cache = EpisodeCache(tmp_path / "cache", "plan", "job")
    staging = tmp_path / "staging"
    keys = {}
    for episode in (1, 2, 12345):
        keys[episode] = cache.key(f"ep{episode}", {})
        cache.put(keys[episode], ROWS)
        cache.deliver(keys[episode], ROWS, staging, episode)
    # A write killed between its temporary file and the rename leaves this behind.
    (cache.dir / "delivered" / ".episode_000002.tmp-1-abcdef01").write_text("x")
    staging_file(staging, 2, "plan").unlink()
    assert forget_deleted(tmp_path / "cache", staging, ["plan", "vqa"]) == 1
    assert cache.get(keys[2]) is None
    assert cache.get(keys[1]) == ROWS and cache.get(keys[12345]) == ROWS

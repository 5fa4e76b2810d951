"""The review server's storage, on a real synthetic dataset and staging files on disk:
what the list orders first, what a save refuses, accepted vs corrected, gold export."""

from __future__ import annotations

import json

import pytest

from episcribe.atomic import write_json
from episcribe.errors import UserError
from episcribe.lerobot import language as L
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.pipeline.cache import record_delivery
from episcribe.pipeline.staging import review_file, staging_file, write_rows
from episcribe.review import command, gold_segments
from episcribe.review.store import ReviewError, ReviewStore


@pytest.fixture
def results(synth_small, tmp_path):
    """A run's results for three episodes of synth_small: plan rows only."""
    ds = LeRobotDataset.open(synth_small)
    results = tmp_path / "results" / "synth_small"
    for index in (0, 1, 2):
        t = [float(x) for x in ds.load_episode(index).timestamps]
        rows = [
            L.make_row("assistant", "reach", "subtask", t[0]),
            L.make_row("assistant", "grasp", "subtask", t[20]),
            L.make_row("assistant", "1. reach\n2. grasp", "plan", t[0]),
            L.make_row("assistant", "1. grasp", "plan", t[20]),
            L.make_row("user", "pick it up", "task_aug", t[0]),
        ]
        if index == 1:  # two boundaries the plan moved onto keystates
            rows += [L.make_row("assistant", '{"from": 1.9}', "snap", t[20])] * 2
        write_rows(staging_file(results / "staging", index, "plan"), rows)
    write_json(results / "validation" / "report.json", {"dataset_root": str(synth_small)})
    return results


def test_hardest_episodes_come_first(results):
    record_delivery(results / "cache", "plan", 2, failed_calls=3, skipped=1)
    listed = ReviewStore(results).summaries()
    assert [e["episode"] for e in listed] == [2, 1, 0]
    assert listed[0]["failed"] == 1 and listed[1]["snaps"] == 2
    assert {e["state"] for e in listed} == {"not reviewed"} and listed[0]["subtasks"] == 2


def test_a_save_that_breaks_a_resolver_rule_is_refused_and_writes_nothing(results):
    store = ReviewStore(results)
    rows = store.episode_view(0)["rows"]
    t = rows[1]["timestamp"]
    broken = rows + [L.make_row("assistant", "grasp again", "subtask", t)]
    with pytest.raises(ReviewError, match=r"active_at\(style=subtask\) cannot choose"):
        store.save(0, broken, "corrected")
    assert not (results / "review").exists()
    with pytest.raises(ReviewError, match="'task_aug' cannot be corrected"):
        store.save(0, rows + [L.make_row("user", "x", "task_aug", 0.0)], "corrected")


def test_accepted_unless_the_rows_differ_from_the_model(results):
    store = ReviewStore(results)
    assert store.save(0, None, "accepted")["state"] == "accepted"
    rows = store.episode_view(1)["rows"]
    relabelled = [
        {**r, "content": "grasp the cube"}
        if r["style"] == "subtask" and r["content"] == "grasp"
        else r
        for r in rows
    ]
    assert store.save(1, relabelled, "accepted")["state"] == "corrected"
    assert store.save(2, None, "flagged", "blurry")["state"] == "flagged"
    assert not review_file(results / "review", 2).exists()
    listed = {e["episode"]: e for e in store.summaries()}
    assert listed[1]["state"] == "corrected" and listed[2]["note"] == "blurry"

    gold = gold_segments(results)
    assert sorted(gold) == [0, 1]  # flagged is not gold
    end = float(LeRobotDataset.open(store.dataset.root).load_episode(1).timestamps[-1])
    assert [s["label"] for s in gold[1]] == ["reach", "grasp the cube"]
    assert gold[1][0]["end_sec"] == gold[1][1]["start_sec"] and gold[1][1]["end_sec"] == end
    kept = (results / "review" / "gold.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode"] for line in kept] == [0, 1]

    exported = results.parent / "gold.jsonl"
    assert command.main([str(results), "--export-gold", str(exported)]) == 0
    assert exported.read_text() == (results / "review" / "gold.jsonl").read_text()


def test_a_results_dir_without_a_run_is_one_clear_error(tmp_path):
    (tmp_path / "results" / "x" / "staging").mkdir(parents=True)
    with pytest.raises(UserError, match="run episcribe first, or name the dataset"):
        ReviewStore(tmp_path / "results" / "x")
    with pytest.raises(UserError, match="no staging files"):
        ReviewStore(tmp_path)

"""Reading gold and predictions, and comparing two predictions."""

from __future__ import annotations

import json

import pytest

from episcribe.errors import UserError
from episcribe.eval.compare import paired_bootstrap
from episcribe.eval.metrics import EpisodeScore, Segment
from episcribe.eval.sources import read_source


def test_jsonl_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "gold.jsonl"
    path.write_text('{"episode": 0, "segments": [{"start_sec": 0, "end_sec": 1}]}\n{"ep": 1}\n')
    with pytest.raises(UserError, match=r"gold\.jsonl:2: expected"):
        read_source(path)
    path.write_text('{"episode": 0, "segments": [{"start_sec": 2, "end_sec": 1}]}\n')
    with pytest.raises(UserError, match=r"gold\.jsonl:1: a segment ends \(1\.0\) before"):
        read_source(path)
    with pytest.raises(UserError, match="does not exist"):
        read_source(tmp_path / "nope")
    with pytest.raises(UserError, match="neither a JSONL file"):
        read_source(tmp_path)


def test_results_directory_gives_written_unsnapped_and_model_views(tmp_path):
    staging = tmp_path / "results" / "d" / "staging" / "episode_000000"
    staging.mkdir(parents=True)

    def row(style, content, ts):
        return {"role": "assistant", "content": content, "style": style, "timestamp": ts,
                "camera": None, "tool_calls": None}  # fmt: skip

    rows = [
        row("subtask", "grasp the cup", 0.0),
        row("subtask", "lift the cup", 2.5),  # moved from 2.3 onto a keystate
        row("snap", json.dumps({"from": 2.3, "keystate": "grasp"}), 2.5),
        row("model_segment", json.dumps({"start": 0.0, "end": 2.3, "instruction": "a"}), 0.0),
        row("model_segment", json.dumps({"start": 2.3, "end": 4.9, "instruction": "b"}), 2.3),
        row("plan", "1. x", 0.0),
        row("memory", "m", 4.9),  # the latest row: the episode's end
    ]
    (staging / "plan.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = read_source(tmp_path / "results" / "d")
    assert source.views["written"][0] == [
        Segment(0.0, 2.5, "grasp the cup"),
        Segment(2.5, 4.9, "lift the cup"),
    ]
    assert source.views["unsnapped"][0][1] == Segment(2.3, 4.9, "lift the cup")
    assert source.views["model"][0] == [Segment(0.0, 2.3, "a"), Segment(2.3, 4.9, "b")]


def _scores(counts):
    return [EpisodeScore(e, p, g, m, m) for e, (m, p, g) in enumerate(counts)]


def test_paired_bootstrap_separates_a_real_gain_from_noise():
    a = _scores([(1, 4, 4)] * 20)
    better = _scores([(3, 4, 4)] * 20)
    result = paired_bootstrap(a, better)
    assert (result["a"], result["b"]) == (0.25, 0.75)
    assert result["difference"] == pytest.approx(0.5)
    assert result["interval"] == pytest.approx([0.5, 0.5])  # every episode gains the same
    # One episode better, one worse, the rest equal: the interval straddles 0.
    mixed = _scores([(4, 4, 4), (0, 4, 4)] + [(1, 4, 4)] * 18)
    low, high = paired_bootstrap(a, mixed)["interval"]
    assert low < 0 < high
    assert paired_bootstrap(a, mixed) == paired_bootstrap(a, mixed)  # fixed seed
    with pytest.raises(ValueError, match="same gold episodes"):
        paired_bootstrap(a, a[:5])

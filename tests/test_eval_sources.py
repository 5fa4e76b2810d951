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
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a JSONL file"):
        read_source(tmp_path / "empty")
    # A review directory is read through the gold.jsonl episcribe review keeps in it.
    path.write_text('{"episode": 3, "segments": [{"start_sec": 0, "end_sec": 1, "label": "a"}]}\n')
    assert read_source(tmp_path).views == read_source(path).views


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


def test_plots_show_every_episode_worst_first_with_matched_bars_in_one_colour(tmp_path):
    from PIL import Image

    from episcribe.eval.command import eval_main
    from episcribe.report.draw import PALETTE, PLACEHOLDER

    def jsonl(name, episodes):
        path = tmp_path / name
        lines = [
            {
                "episode": ep,
                "segments": [{"start_sec": a, "end_sec": b, "label": c} for a, b, c in segs],
            }
            for ep, segs in episodes.items()
        ]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return path

    gold = jsonl("gold.jsonl", {0: [(0, 2, "a"), (2, 4, "b")], 1: [(0, 3, "c"), (3, 6, "d")]})
    pred = jsonl("pred.jsonl", {0: [(0, 2, "a"), (2, 4, "b")], 1: [(0, 1, "x"), (1, 6, "y")]})
    assert (
        eval_main(["--gold", str(gold), "--pred", str(pred), "--plots", str(tmp_path / "p")]) == 0
    )
    page = (tmp_path / "p" / "index.html").read_text()
    assert page.index("episode_000001.png") < page.index("episode_000000.png")  # F1 0 first
    image = Image.open(tmp_path / "p" / "episode_000001.png").convert("RGB")
    row = lambda y: {image.getpixel((x, y)) for x in range(260, 1370, 10)}  # noqa: E731

    # Lanes start at y = 76 (gold) and 114 (the prediction): gold in colours, the
    # prediction, which matched nothing, grey.
    def has(colour, pixels):  # the PNG's palette may move a colour by a unit
        return any(max(abs(a - b) for a, b in zip(colour, p, strict=True)) <= 2 for p in pixels)

    assert has(PALETTE[0], row(80)) and has(PALETTE[1], row(80))
    assert has(PLACEHOLDER, row(118))
    assert not has(PALETTE[0], row(118)) and not has(PALETTE[1], row(118))

"""What LeRobot's recipe renderer needs, checked on every frame of datasets we wrote.

``lerobot_resolvers`` restates LeRobot's resolvers independently of our validator; a
frame where a binding matches two rows is a frame LeRobot refuses to train on.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from lerobot_resolvers import dataset_ties
from smk import Workspace

# Interjections as early and as many as the episodes allow: each one puts a refreshed
# plan on a subtask start that already has the plan module's plan row.
CROWDED = dict(
    interjections__max_interjections_per_episode=3,
    interjections__interjection_min_t=0.5,
)


def _plan_rows_at_interjections(root) -> tuple[int, int]:
    """(interjection frames, plan rows at those frames' timestamps): equal when each
    interjection frame has exactly one plan row starting there."""
    frames = plans = 0
    for shard in sorted((root / "data").rglob("*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            if any(e["style"] == "interjection" for e in row["language_events"]):
                frames += 1
                plans += sum(
                    1
                    for p in row["language_persistent"]
                    if p["style"] == "plan" and p["timestamp"] == row["timestamp"]
                )
    return frames, plans


def test_no_frame_of_g1_bottle_ties_for_lerobot(g1_source, tmp_path):
    ws = Workspace(tmp_path, g1_source, **CROWDED)
    ws.run()
    out = ws.root / "results/g1_bottle/annotated"
    frames, ties = dataset_ties(out)
    assert frames == 1093
    assert ties == []
    interjection_frames, plans = _plan_rows_at_interjections(out)
    assert interjection_frames > 0
    assert plans == interjection_frames


def test_no_frame_of_a_twelve_episode_dataset_ties_for_lerobot(make_synth, tmp_path):
    data = make_synth("synth12", episodes=12, seconds=8.0, fps=10, episodes_per_file=5, seed=4)
    ws = Workspace(tmp_path / "ws", data, **CROWDED)
    ws.run()
    out = ws.root / "results/synth12/annotated"
    frames, ties = dataset_ties(out)
    assert frames == 12 * 80
    assert ties == []
    interjection_frames, plans = _plan_rows_at_interjections(out)
    assert interjection_frames >= 12, "expected several interjections per episode"
    assert plans == interjection_frames
    # Both modules keep their own rows in staging: the merge happens on the way out.
    staged = ws.root / "results/synth12/staging"
    plan_times = {
        json.loads(line)["timestamp"]
        for path in staged.glob("episode_*/plan.jsonl")
        for line in path.read_text().splitlines()
        if json.loads(line)["style"] == "plan"
    }
    refreshed = {
        json.loads(line)["timestamp"]
        for path in staged.glob("episode_*/plan_update.jsonl")
        for line in path.read_text().splitlines()
    }
    # An interjection on a frame a VQA pair holds moves to the next free frame (LeRobot
    # trains one event kind per frame): its refreshed plan follows it there, a frame or
    # two after the subtask start whose plan row it would otherwise replace.
    moved = refreshed - plan_times
    assert refreshed & plan_times
    assert all(any(0 < t - p <= 0.2 + 1e-6 for p in plan_times) for t in moved), moved


@pytest.mark.parametrize("second_plan", [False, True])
def test_the_tie_checker_itself_sees_two_plan_rows_at_one_timestamp(
    make_synth, tmp_path, second_plan
):
    """The checker must fail on the very dataset shape LeRobot refused."""
    from episcribe.lerobot.dataset import LeRobotDataset
    from episcribe.lerobot.language import make_row
    from episcribe.lerobot.writer import write_annotated
    from episcribe.pipeline.staging import rows_from, write_rows

    data = make_synth("tiny", episodes=1, seconds=2.0, episodes_per_file=1)
    ds = LeRobotDataset.open(data)
    ts = ds.load_episode(0).timestamps.tolist()
    staging = tmp_path / "staging"
    rows = [
        make_row("assistant", "1. pick", "plan", ts[0]),
        make_row("assistant", "x", "subtask", ts[0]),
    ]
    rows += [make_row("assistant", "1. other plan", "plan", ts[0])] * second_plan
    write_rows(staging / "episode_000000" / "plan.jsonl", rows)
    write_annotated(ds, rows_from(staging, ["plan"]), [0], ["plan"], tmp_path / "out")
    _, ties = dataset_ties(tmp_path / "out")
    assert len({t for _, t, _ in ties}) == (len(ts) if second_plan else 0)

"""Every event reaches training: one event kind per frame, as LeRobot's recipes route them.

The workflow test re-derives, from the written parquet files, what LeRobot's routing
sees on each frame (``lerobot_resolvers.frame_routes``), independently of our validator.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from lerobot_resolvers import frame_routes
from smk import Workspace

from episcribe.modules.placement import interjection_frames, vqa_frame_set, vqa_frames

FPS = 10


def frames(seconds: float) -> np.ndarray:
    return np.arange(round(seconds * FPS), dtype=np.float32) / FPS


def test_vqa_ticks_leave_frame_0_and_give_each_camera_its_own_frames():
    placed = vqa_frames(frames(4), 1.0, 3)
    assert placed == [[1, 2, 3], [10, 11, 9], [20, 21, 19], [30, 31, 29]]
    used = [f for tick in placed for f in tick]
    assert len(used) == len(set(used)) and 0 not in used


def test_a_tick_with_no_free_frame_within_half_its_spacing_is_dropped():
    # 5 Hz at 10 fps: ticks 2 frames apart, so a tick may move 1 frame
    placed = vqa_frames(frames(1), 5.0, 2)
    assert placed[0] == [1, None]  # frame 0 is the first reply's, frame 1 camera 1's
    assert placed[1:] == [[2, 3], [4, 5], [6, 7], [8, 9]]
    assert vqa_frames(frames(1), 0.0, 2) == [] and vqa_frames(frames(1), 1.0, 0) == []


def test_interjections_move_to_the_first_later_frame_no_vqa_pair_holds():
    avoid = vqa_frame_set(frames(4), 1.0, 2)  # {1, 2, 10, 11, 20, 21, 30, 31}
    assert interjection_frames([10, 15, 20, 21], avoid, 40) == [12, 15, 22, 23]
    assert interjection_frames([38, 39], {39}, 40) == [38, 37]  # at the end: earlier
    assert interjection_frames([0], set(), 40) == [1]  # frame 0 is the first reply's


# Built to collide: interjections as early and many as allowed, VQA on 2 cameras at
# 2.5 Hz (4 of every 10 frames hold a VQA pair, so most boundaries sit on or beside one).
COLLIDING = dict(
    interjections__max_interjections_per_episode=3,
    interjections__interjection_min_t=0.5,
    vqa__vqa_emission_hz=2.5,
    plan__n_task_rephrasings=0,
)


def test_no_frame_of_a_colliding_dataset_trains_a_vqa_pair_over_speech_or_two_cameras(
    make_synth, tmp_path
):
    data = make_synth("collide", episodes=4, seconds=8.0, fps=FPS, episodes_per_file=4, seed=3)
    ws = Workspace(tmp_path / "ws", data, **COLLIDING)
    ws.run()
    out = ws.root / "results/collide/annotated"
    routes = frame_routes(out)
    speaking = [r for r in routes if r["says"]]
    vqa = [r for r in routes if "vqa" in r["styles"]]
    assert len(speaking) >= 4 + 4 and len(vqa) > 4 * 20  # replies and interjections, VQA
    for route in routes:
        cameras = set(route["vqa_rows"])
        # no frame routes to VQA while a spoken exchange sits on it
        assert not (cameras and (route["says"] or "interjection" in route["styles"])), route
        # one camera's pair at most: LeRobot's default VQA binding names no camera
        assert len(cameras) <= 1 and len(route["vqa_rows"]) in (0, 2), route
        # the interjection and the robot's reply stay on one frame
        assert ("interjection" in route["styles"]) <= route["says"], route
    firsts = {r["episode"]: r for r in routes if r["frame"] == 0}
    assert len(firsts) == 4 and all(r["says"] and not r["vqa_rows"] for r in firsts.values())

    # The dataset did collide: some interjections left their subtask start for a free frame
    moved = 0
    for shard in sorted((out / "data").rglob("*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            if any(e["style"] == "interjection" for e in row["language_events"]):
                starts = {p["timestamp"] for p in row["language_persistent"]}
                subtask_starts = {
                    p["timestamp"] for p in row["language_persistent"] if p["style"] == "subtask"
                }
                moved += row["timestamp"] not in subtask_starts
                assert row["timestamp"] in starts  # its refreshed plan came along
    assert moved > 0

    report = json.loads((ws.root / "results/collide/validation/report.json").read_text())
    assert report["frames_sharing_events"] == 0 and report["errors"] == 0


@pytest.mark.parametrize("speech", [True, False])
def test_the_validator_names_the_episode_and_frame_where_events_still_meet(
    make_synth, tmp_path, speech
):
    from episcribe.lerobot.dataset import LeRobotDataset
    from episcribe.lerobot.language import make_row, speech_atom
    from episcribe.pipeline.validation import validate_episode

    data = make_synth("tiny", episodes=1, seconds=2.0, episodes_per_file=1)
    episode = LeRobotDataset.open(data).load_episode(0)
    t = float(episode.timestamps[5])
    top, wrist = "observation.images.top", "observation.images.wrist"
    answer = json.dumps({"label": "cup", "count": 1})
    vqa = [make_row("user", "How many cups?", "vqa", t, top)]
    vqa += [make_row("assistant", answer, "vqa", t, top)]
    if speech:
        others = {"interjections": [speech_atom("On it.", t)]}
    else:
        others = {}
        vqa += [make_row("user", "How many?", "vqa", t, wrist)]
        vqa += [make_row("assistant", answer, "vqa", t, wrist)]
    problems = validate_episode(episode, (top, wrist), {"vqa": vqa, **others})
    shared = [p for p in problems if p.message.startswith("frame shares events")]
    assert [(p.severity, p.episode, p.timestamp) for p in shared] == [("warning", 0, t)]
    assert "(frame 5)" in shared[0].message
    expected = "beside a spoken exchange" if speech else "VQA pairs of 2 cameras"
    assert expected in shared[0].message


def test_an_interjection_moved_into_its_subtask_still_asks_about_that_subtask():
    from episcribe.modules.interjections.run import subtask_context

    subtasks = [(0.0, "reach"), (1.5, "grasp"), (3.0, "lift")]
    at_start = subtask_context(subtasks, 1.5)
    assert at_start == ("reach", "grasp")
    assert subtask_context(subtasks, 1.7) == at_start  # moved two frames on
    assert subtask_context(subtasks, 3.1) == ("grasp", "lift")
    assert subtask_context([], 1.0) == ("(starting)", "(finishing the task)")

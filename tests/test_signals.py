"""The robot's own signals: channels by name, keystates against the synthetic script,
motion rows, and plan boundaries moved onto keystates through the real workflow."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from smk import Workspace
from synth_robot import STATE_NAMES, signal_script

from episcribe.config import resolve
from episcribe.errors import ConfigError
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.modules import registry
from episcribe.modules.base import EpisodeContext, FrameSource
from episcribe.modules.plan.grounding import TimedKeystate, facts, snap_boundaries
from episcribe.modules.prompts import PromptSet
from episcribe.modules.signals import analysis as signals

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
SETTINGS = resolve({})["signals"]
TOLERANCE = 2  # frames between a scripted event and the detected keystate


def test_channels_are_found_by_name_on_a_humanoid_and_a_single_arm(g1_source):
    info = json.loads((g1_source / "meta/info.json").read_text())
    names = signals.feature_names(info, "observation.state")
    g1 = signals.find_channels(names)
    assert [names[i] for i in g1.grippers["right"]] == [
        f"kRightHand{f}" for f in ("Pinky", "Ring", "Middle", "Index", "ThumbBend", "ThumbRotation")
    ]
    assert len(g1.grippers["left"]) == 6 and g1.gripper_parts == {"left": "hand", "right": "hand"}
    assert [names[i] for i in g1.arms["left"]][:2] == ["kLeftShoulderPitch", "kLeftShoulderRoll"]
    assert len(g1.arms["right"]) == 7 and not g1.ee_position

    so101 = signals.find_channels(STATE_NAMES)
    assert so101.grippers == {"": [5]} and so101.arms == {"": [0, 1, 2, 3, 4]}

    ee = signals.find_channels(["eef_x", "eef_y", "eef_z", "eef_roll", "eef_pitch", "eef_yaw"])
    assert ee.ee_position == {"": [0, 1, 2]} and ee.ee_rotation == {"": [3, 4, 5]}
    assert signals.find_channels(["motor_0", "motor_1", "joint"]).grippers == {}
    assert signals.find_channels(["a", "b"]).empty()


@pytest.mark.parametrize("fps, seconds", [(10, 4.0), (15, 6.0), (30, 10.0)])
def test_keystates_match_the_script_within_two_frames_and_nothing_more(fps, seconds):
    channels = signals.find_channels(STATE_NAMES)
    for episode in range(8):
        script = signal_script(episode, int(fps * seconds), fps)
        found = signals.analyse(script.state, channels, SETTINGS, fps).keystates
        assert [k.kind for k in found] == [kind for kind, _ in script.events], episode
        for k, (_, frame) in zip(found, script.events, strict=True):
            assert abs(k.frame - frame) <= TOLERANCE, (episode, k, frame)


def test_a_gripper_recording_closure_upward_needs_the_setting():
    script = signal_script(0, 60, 15)
    flipped = script.state.copy()
    flipped[:, 5] = 50 - flipped[:, 5]  # closing now goes up
    channels = signals.find_channels(STATE_NAMES)
    wrong = signals.analyse(flipped, channels, SETTINGS, 15).keystates
    right = signals.analyse(flipped, channels, {**SETTINGS, "gripper_closes_toward": "high"}, 15)
    assert [k.kind for k in right.keystates] == ["grasp", "release", "rest"]
    assert [k.kind for k in wrong] != ["grasp", "release", "rest"]


def test_a_still_hand_and_a_still_arm_give_no_keystates():
    rng = np.random.default_rng(0)
    still = 0.5 + rng.normal(0, 0.002, (90, 6))  # a hand that only jitters
    channels = signals.find_channels(STATE_NAMES)
    assert signals.analyse(still, channels, SETTINGS, 30).keystates == []


def test_end_effector_motion_is_named_in_the_base_frame():
    fps, n = 10, 60
    t = np.arange(n) / fps
    x = np.where(t < 3, 0.0, (t - 3) * 0.1)  # forward after 3 s
    z = np.where(t < 3, t * 0.1, 0.3)  # up for the first 3 s
    values = np.column_stack([x, np.zeros(n), z])
    channels = signals.find_channels(["ee.x", "ee.y", "ee.z"])
    found = signals.analyse(values, channels, SETTINGS, fps)
    runs = signals.primitive_runs(found.primitives, 5)
    assert [phrase for _, phrase in runs] == ["move the arm up", "move the arm forward"]
    assert runs[1][0] in range(29, 32)


def test_short_primitives_join_a_neighbour():
    phrases = ["a"] * 10 + ["b"] * 2 + ["a"] * 10 + ["c"] * 8
    assert signals.primitive_runs(phrases, 5) == [(0, "a"), (22, "c")]


def _keystate(ts, frame, kind="grasp"):
    return TimedKeystate(float(ts[frame]), signals.Keystate(frame, kind, "", "gripper"))


def test_boundaries_within_the_tolerance_move_onto_keystates_in_order():
    ts = (np.arange(100) / 10).astype(np.float32)
    keys = [_keystate(ts, 32), _keystate(ts, 60, "release"), _keystate(ts, 71, "rest")]
    subtasks = [(0, "a"), (35, "b"), (50, "c"), (66, "d"), (69, "e")]
    moved, rows = snap_boundaries(subtasks, ts, keys, 0.5)
    # 35 -> 32; 50 is 1 s from any keystate; 66 is 0.6 s from 60 and 71: stays; 69 -> 71.
    assert moved == [(0, "a"), (32, "b"), (50, "c"), (66, "d"), (71, "e")]
    assert [json.loads(r["content"]) for r in rows] == [
        {"from": float(ts[35]), "keystate": "grasp gripper"},
        {"from": float(ts[69]), "keystate": "rest gripper"},
    ]
    assert [r["style"] for r in rows] == ["snap", "snap"]
    # A keystate past the next boundary would swap two subtasks: the model's order stands.
    assert snap_boundaries([(0, "a"), (30, "b"), (31, "c")], ts, keys, 0.5)[0][1:] == [
        (30, "b"),
        (32, "c"),
    ]
    assert snap_boundaries(subtasks, ts, keys, 0)[0] == subtasks


def test_the_segment_prompt_states_the_keystates_of_its_window():
    ts = (np.arange(100) / 10).astype(np.float32)
    keys = [_keystate(ts, 32), _keystate(ts, 60, "release")]
    text = facts(keys, 0.0, 5.0)
    assert "the gripper closes at 3.200 s (grasp)" in text and "opens" not in text
    assert facts(keys, 7.0, 9.9) == ""
    fields = {k: "x" for k in ("context", "task", "max_steps", "min_seconds", "first", "last")}
    rendered = PromptSet(PROMPTS).get("segment").render(**fields, keystates=text)
    assert "the gripper closes at 3.200 s (grasp)" in rendered


def _run_signals(dataset: LeRobotDataset, index: int, **settings) -> list[dict]:
    episode = dataset.load_episode(index)
    vlm = {"camera_key": dataset.cameras[0]}
    ctx = EpisodeContext(
        dataset=dataset,
        episode=episode,
        client=None,
        prompts=PromptSet(PROMPTS),
        settings={**SETTINGS, **settings},
        vlm=vlm,
        seed=None,
        upstream={},
        frames=FrameSource(dataset, episode, vlm),
    )
    return asyncio.run(registry.run_episode("signals")(ctx))


def test_names_that_identify_nothing_give_a_note_and_no_rows(make_synth, caplog):
    root = make_synth("anon", episodes=1)
    info = json.loads((root / "meta/info.json").read_text())
    for key in ("observation.state", "action"):
        info["features"][key]["names"] = [[f"motor_{i}" for i in range(6)]]
    (root / "meta/info.json").write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING):
        assert _run_signals(LeRobotDataset.open(root), 0) == []
    (note,) = [r.getMessage() for r in caplog.records]
    assert "motor_0" in note and "no keystates or motion rows" in note


def test_through_the_workflow_keystates_ground_the_plan(make_synth, tmp_path):
    fps, seconds = 15, 6.0
    data = make_synth("synth_sig", episodes=4, seconds=seconds, fps=fps, seed=3)
    ws = Workspace(tmp_path / "ws", data, vqa__enabled=False, plan__keystate_snap_seconds=1.0)
    ws.run()
    staging = ws.root / "results/synth_sig/staging"
    dataset = LeRobotDataset.open(data)
    moved = boundaries = 0
    for index in range(4):
        ts = dataset.load_episode(index).timestamps
        rows = _read(staging / f"episode_{index:06d}/signals.jsonl")
        keys = [r for r in rows if r["style"] == "keystate"]
        script = signal_script(index, int(fps * seconds), fps, seed=3)
        frames = [int(np.searchsorted(ts, np.float32(r["timestamp"]))) for r in keys]
        assert [json.loads(r["content"])["kind"] for r in keys] == [k for k, _ in script.events]
        assert all(abs(f - e) <= TOLERANCE for f, (_, e) in zip(frames, script.events, strict=True))
        motion = [r for r in rows if r["style"] == "motion"]
        assert len({r["timestamp"] for r in motion}) == len(motion)
        assert any("close the gripper" == r["content"] for r in motion)

        plan = _read(staging / f"episode_{index:06d}/plan.jsonl")
        key_times = sorted(r["timestamp"] for r in keys)
        starts = sorted(r["timestamp"] for r in plan if r["style"] == "subtask")
        snaps = {r["timestamp"]: json.loads(r["content"]) for r in plan if r["style"] == "snap"}
        bounds = [*starts, float("inf")]
        for k in range(1, len(starts)):
            boundaries += 1
            start = starts[k]
            if start in snaps:
                moved += 1
                assert start in key_times and abs(snaps[start]["from"] - start) <= 1.0 + 1e-6
                continue
            # Left alone only when the nearest keystate is too far, or already a boundary,
            # or would put this subtask before the previous one or after the next.
            near = min(key_times, key=lambda t: (abs(t - start), t))
            fits = bounds[k - 1] < near < bounds[k + 1]
            assert abs(near - start) > 1.0 or near == start or not fits, (index, start, near)
        said = [r for r in _read(staging / f"episode_{index:06d}/interjections.jsonl")]
        assert all(r["timestamp"] in starts for r in said if r["style"] == "interjection")
    assert moved > 0 and boundaries > 0

    report = json.loads((ws.root / "results/synth_sig/validation/report.json").read_text())
    assert report["ok"] and report["rows_per_style"]["motion"] > 0
    assert not {"keystate", "snap"} & set(report["rows_per_style"])
    written = ws.root / "results/synth_sig/annotated"
    styles = {
        row["style"]
        for shard in written.rglob("data/**/*.parquet")
        for frame in pq.read_table(shard).column("language_persistent").to_pylist()
        for row in frame
    }
    assert "motion" in styles and not styles & {"keystate", "snap"}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_inverted_gripper_band_is_a_config_error(synth_small):
    with pytest.raises(ConfigError, match="gripper_low"):
        _run_signals(LeRobotDataset.open(synth_small), 0, gripper_low=0.8)

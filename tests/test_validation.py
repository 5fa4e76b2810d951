"""Validation: every SPEC §6 error and warning, triggered by real staging files on g1_bottle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from episcribe.lerobot import language as L
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.pipeline.staging import MODULES, staging_file, write_rows
from episcribe.pipeline.validation import Problem, Report, validate_episode, validate_staging

VQA_ANSWERS = [
    {"label": "bottle", "count": 1},
    {"detections": [{"label": "bottle", "bbox_format": "xyxy", "bbox": [10, 12, 40.5, 80]}]},
    {"label": "bottle", "point_format": "xy", "point": [20, 30]},
    {"label": "bottle", "attribute": "color", "value": "yellow"},
    {"subject": "bottle", "relation": "left of", "object": "hand"},
]


def full_staging(episode, cameras) -> dict[str, list[dict]]:
    """A valid staging set with a row of every style a module may emit."""
    ts = [float(t) for t in episode.timestamps]
    t0, mid = ts[0], ts[len(ts) // 2]
    plan = [
        L.make_row("user", "Pick up the yellow bottle.", "task_aug", t0),
        L.make_row("user", "Grab the yellow bottle.", "task_aug", t0),
        L.make_row("assistant", "reach for the bottle", "subtask", t0),
        L.make_row("assistant", "close the hand around it", "subtask", mid),
        L.make_row("assistant", "1. reach\n2. grasp", "plan", t0),
        L.make_row("assistant", "1. grasp", "plan", mid),
        L.make_row("assistant", "I reached the bottle.", "memory", mid),
        L.make_row("assistant", json.dumps({"from": ts[3], "keystate": "grasp"}), "snap", mid),
    ]
    grasp = json.dumps({"arm": "right", "kind": "grasp", "part": "hand"})
    signals = [
        L.make_row("assistant", "move the right arm forward", "motion", t0),
        L.make_row("assistant", "close the right hand", "motion", mid),
        L.make_row("assistant", grasp, "keystate", mid),
    ]
    interjections = [
        L.speech_atom("On it!", t0),
        L.make_row("user", "Grab it with your right hand.", "interjection", mid),
        L.speech_atom("Grabbing it with my right hand.", mid),
    ]
    plan_update = [L.make_row("assistant", "1. grasp with the right hand", "plan", mid)]
    vqa = []
    for cam_no, cam in enumerate(cameras):
        for i, answer in enumerate(VQA_ANSWERS):
            t = ts[5 + 3 * i + cam_no]  # each camera's pairs on frames of their own
            vqa.append(L.make_row("user", f"question {i}?", "vqa", t, cam))
            vqa.append(L.make_row("assistant", json.dumps(answer), "vqa", t, cam))
    return {
        "signals": signals,
        "plan": plan,
        "interjections": interjections,
        "plan_update": plan_update,
        "vqa": vqa,
    }


def stage(staging_dir, episode_index, rows_by_module):
    for module, rows in rows_by_module.items():
        write_rows(staging_file(staging_dir, episode_index, module), rows)


@pytest.fixture(scope="module")
def g1(g1_source):
    return LeRobotDataset.open(g1_source)


@pytest.fixture(scope="module")
def ep0(g1):
    return g1.load_episode(0)


def test_full_staging_set_has_no_problems(g1, tmp_path):
    for i in g1.episode_indices():
        stage(tmp_path, i, full_staging(g1.load_episode(i), g1.cameras))
    report = validate_staging(g1, tmp_path, g1.episode_indices(), MODULES)
    assert report.problems == []
    assert report.episodes == g1.episode_indices()
    n = len(g1.episode_indices())
    assert report.counts["vqa"] == 10 * n and report.counts["null"] == 2 * n
    # Staging-only rows are checked but never counted as written rows.
    assert report.counts["motion"] == 2 * n and "keystate" not in report.counts
    assert "snap" not in report.counts
    # Rows as written: of the 3 staged plan rows, the refreshed one replaces the one at mid.
    assert report.counts["plan"] == 2 * n and report.counts["task_aug"] == 2 * n


def _mutate(ep, cams, fn):
    rows = full_staging(ep, cams)
    fn(rows, [float(t) for t in ep.timestamps])
    return rows


def _off_frame(rows, ts):
    for r in rows["vqa"][:2]:
        r["timestamp"] = ts[5] + 0.001


def _drop_speech_at_interjection(rows, ts):
    rows["interjections"] = [r for r in rows["interjections"] if r["timestamp"] == ts[0]] + [
        r for r in rows["interjections"] if r["style"] == "interjection"
    ]


def _move_interjection_off_plan(rows, ts):
    for r in rows["interjections"][1:]:
        r["timestamp"] = ts[3]


def _vqa_answer(text):
    def fn(rows, ts):
        rows["vqa"][1]["content"] = text

    return fn


def _set(module, i, **changes):
    def fn(rows, ts):
        rows[module][i].update(changes)

    return fn


def _append(module, row_fn):
    def fn(rows, ts):
        rows[module].append(row_fn(ts))

    return fn


CAM = "observation.images.cam_high"
ERROR_CASES = {
    "event_not_on_a_frame": (_off_frame, "vqa", "not one of the episode's frame timestamps"),
    "interjection_without_speech": (_drop_speech_at_interjection, "interjections", "speech atom"),
    "interjection_without_plan": (_move_interjection_off_plan, "interjections", "plan row"),
    "vqa_not_json": (_vqa_answer("one bottle"), "vqa", "not JSON"),
    "vqa_json_no_shape": (_vqa_answer('{"answer": 1}'), "vqa", "not one of the shapes"),
    "vqa_bbox_three_numbers": (
        _vqa_answer('{"detections":[{"label":"a","bbox_format":"xyxy","bbox":[1,2,3]}]}'),
        "vqa",
        "bbox answer",
    ),
    "vqa_bbox_wrong_format": (
        _vqa_answer('{"detections":[{"label":"a","bbox_format":"xywh","bbox":[1,2,3,4]}]}'),
        "vqa",
        "bbox answer",
    ),
    "vqa_count_not_int": (_vqa_answer('{"label":"a","count":1.5}'), "vqa", "count answer"),
    "vqa_keypoint_no_format": (_vqa_answer('{"label":"a","point":[1,2]}'), "vqa", "keypoint"),
    "vqa_spatial_missing_object": (
        _vqa_answer('{"subject":"a","relation":"on"}'),
        "vqa",
        "spatial answer",
    ),
    "vqa_duplicate": (
        _append("vqa", lambda ts: L.make_row("user", "again?", "vqa", ts[5], CAM)),
        "vqa",
        "2 event rows of style 'vqa', role 'user'",
    ),
    "two_subtasks_at_one_timestamp": (
        _append("plan", lambda ts: L.make_row("assistant", "grasp", "subtask", ts[0])),
        "plan",
        "2 'subtask' rows at one timestamp",
    ),
    "two_memories_of_two_roles_tie": (
        _append("plan", lambda ts: L.make_row("user", "I did it.", "memory", ts[len(ts) // 2])),
        "plan",
        "active_at(style=memory)",
    ),
    "two_interjections_at_one_frame": (
        _append(
            "interjections",
            lambda ts: L.make_row("user", "Faster!", "interjection", ts[len(ts) // 2]),
        ),
        "interjections",
        "2 event rows of style 'interjection'",
    ),
    "two_speech_atoms_at_one_frame": (
        _append("interjections", lambda ts: L.speech_atom("Sure.", ts[0])),
        "interjections",
        "2 event rows of style null",
    ),
    "say_call_on_an_interjection_row_and_a_speech_atom": (
        _append(
            "interjections",
            lambda ts: L.make_row(
                "assistant",
                "ok",
                "interjection",
                ts[0],
                tool_calls=[{"type": "function", "function": {"name": "say", "arguments": {}}}],
            ),
        ),
        "interjections",
        "say tool call",
    ),
    "subtask_after_the_last_frame": (
        _append("plan", lambda ts: L.make_row("assistant", "late", "subtask", 999.0)),
        "plan",
        "lies outside the episode",
    ),
    "plan_before_the_first_frame": (
        _append("plan", lambda ts: L.make_row("assistant", "1. early", "plan", ts[0] - 1.0)),
        "plan",
        "lies outside the episode",
    ),
    "unknown_style": (_set("plan", 2, style="narration"), "plan", "unknown style 'narration'"),
    "style_from_wrong_module": (_set("plan_update", 0, style="subtask"), "plan_update", "may not"),
    "persistent_style_from_vqa": (
        _append("vqa", lambda ts: L.make_row("assistant", "x", "subtask", ts[0])),
        "vqa",
        "may not come from module 'vqa'",
    ),
    "vqa_without_camera": (_set("vqa", 0, camera=None), "vqa", "needs a camera"),
    "vqa_unknown_camera": (
        _set("vqa", 0, camera="observation.images.wrist"),
        "vqa",
        "not a camera",
    ),
    "camera_on_subtask": (_set("plan", 2, camera=CAM), "plan", "camera must be null"),
    "camera_on_speech": (_set("interjections", 0, camera=CAM), "interjections", "camera must be"),
    "no_content_no_tool_calls": (_set("plan", 2, content=None), "plan", "neither content nor"),
    "style_null_without_tool_calls": (
        _set("interjections", 0, content="hello", tool_calls=None),
        "interjections",
        "style null must carry tool_calls",
    ),
    "role_missing": (_set("plan", 0, role=None), "plan", "role must be"),
    "timestamp_not_a_number": (_set("plan", 0, timestamp="0.0"), "plan", "timestamp must be"),
    "tool_calls_not_objects": (
        _set("interjections", 0, tool_calls=["say hi"]),
        "interjections",
        "tool_calls must be",
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_each_error_is_reported_with_its_module(g1, ep0, tmp_path, case):
    fn, module, message = ERROR_CASES[case]
    stage(tmp_path, 0, _mutate(ep0, g1.cameras, fn))
    report = validate_staging(g1, tmp_path, [0], MODULES)
    hits = [p for p in report.errors if message in p.message]
    assert hits, report.to_text()
    assert all(p.episode == 0 and p.module == module for p in hits)


def test_staging_only_rows_need_a_frame_and_a_json_object(g1, ep0, tmp_path):
    rows = full_staging(ep0, g1.cameras)
    t = float(ep0.timestamps[4])
    rows["signals"] += [
        L.make_row("assistant", "grasp", "keystate", t),
        L.make_row("assistant", json.dumps({"kind": "rest"}), "keystate", t + 0.001),
    ]
    stage(tmp_path, 0, rows)
    errors = validate_staging(g1, tmp_path, [0], MODULES).errors
    assert [(e.module, e.message.split(" ")[0:2]) for e in errors] == [
        ("signals", ["keystate", "row"]),
        ("signals", ["keystate", "timestamp"]),
    ]


def test_event_timestamp_matching_is_float32_exact(g1, ep0):
    rows = full_staging(ep0, g1.cameras)
    # The float64 value nearest the float32 frame time (as a module might compute it)
    # still names that frame; anything one float32 step away does not.
    problems = validate_episode(ep0, g1.cameras, rows)
    assert not problems
    t = float(ep0.timestamps[5])
    assert validate_episode(ep0, g1.cameras, {"vqa": []}) == []
    nxt = float(np.nextafter(np.float32(t), np.float32(1e9)))
    rows["vqa"] = [L.make_row("user", "q", "vqa", nxt, g1.cameras[0])]
    (p,) = validate_episode(ep0, g1.cameras, rows)
    assert p.severity == "error" and p.timestamp == nxt


def test_missing_staging_file_of_enabled_module_is_an_error(g1, ep0, tmp_path):
    rows = full_staging(ep0, g1.cameras)
    del rows["vqa"]
    stage(tmp_path, 0, rows)
    report = validate_staging(g1, tmp_path, [0], MODULES)
    (p,) = report.errors
    assert p.module == "vqa" and "vqa.jsonl is missing" in p.message
    # Disabled modules are not required.
    assert validate_staging(g1, tmp_path, [0], ["plan", "interjections", "plan_update"]).ok


def test_unreadable_staging_file_is_an_error_naming_the_line(g1, ep0, tmp_path):
    stage(tmp_path, 0, full_staging(ep0, g1.cameras))
    path = staging_file(tmp_path, 0, "vqa")
    lines = path.read_text().count("\n")
    path.write_text(path.read_text() + "{oops\n")
    (p,) = validate_staging(g1, tmp_path, [0], MODULES).errors
    assert p.module == "vqa" and f"{path}:{lines + 1}: not valid JSON" in p.message


def test_persistent_rows_without_plan_warn(g1, ep0, tmp_path):
    rows = {"plan": [r for r in full_staging(ep0, g1.cameras)["plan"] if r["style"] != "plan"]}
    stage(tmp_path, 0, rows)
    report = validate_staging(g1, tmp_path, [0], ["plan"])
    assert report.errors == []
    assert [p.message for p in report.warnings] == [
        "persistent rows but no plan row in this episode"
    ]


def test_memory_off_subtask_start_warns(g1, ep0, tmp_path):
    rows = full_staging(ep0, g1.cameras)
    rows["plan"][6]["timestamp"] = float(ep0.timestamps[4])
    stage(tmp_path, 0, rows)
    report = validate_staging(g1, tmp_path, [0], MODULES)
    assert report.errors == []
    (w,) = report.warnings
    assert w.module == "plan" and w.timestamp == float(ep0.timestamps[4]) and "memory" in w.message


def test_vqa_coordinates_outside_the_image_warn(g1, ep0):
    rows = full_staging(ep0, g1.cameras)
    seg = ep0.info.videos[g1.cameras[0]]
    rows["vqa"][5]["content"] = json.dumps(
        {"label": "a", "point_format": "xy", "point": [seg.width + 5, 1]}
    )
    (w,) = validate_episode(ep0, g1.cameras, rows)
    assert w.severity == "warning" and "outside" in w.message


def test_report_text_json_and_files(g1, ep0, tmp_path):
    rows = full_staging(ep0, g1.cameras)
    rows["vqa"][1]["content"] = "nope"
    stage(tmp_path / "staging", 0, rows)
    report = validate_staging(g1, tmp_path / "staging", [0], MODULES)
    assert not report.ok and len(report.errors) == 1
    text = report.to_text().splitlines()
    assert text[0].startswith("FAILED: 1 episodes")
    t = float(ep0.timestamps[5])
    assert f"episode 0 · vqa · t={t:.3f} · error: VQA answer content is not JSON" in text[-1]
    data = report.to_json()
    assert data["errors"] == 1 and data["problems"][0]["module"] == "vqa"
    report.write(tmp_path / "out" / "report.json", tmp_path / "out" / "report.txt")
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == data
    assert (tmp_path / "out" / "report.txt").read_text() == report.to_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "report.txt"]


def test_problem_text_without_timestamp():
    p = Problem("warning", 3, None, None, "persistent rows but no plan row")
    assert p.to_text() == "episode 3 · warning: persistent rows but no plan row"
    assert Report(problems=[p]).ok


def test_refreshed_plan_supersedes_the_plan_row_at_its_timestamp_only(g1, ep0, tmp_path):
    """plan + plan_update rows at one timestamp are one row as written, so no tie; two
    plan rows of the plan module where nothing supersedes them still tie."""
    rows = full_staging(ep0, g1.cameras)
    mid = rows["plan_update"][0]["timestamp"]
    assert any(r["style"] == "plan" and r["timestamp"] == mid for r in rows["plan"])
    stage(tmp_path, 0, rows)
    assert validate_staging(g1, tmp_path, [0], MODULES).problems == []

    t0 = rows["plan"][0]["timestamp"]
    rows["plan"].append(L.make_row("assistant", "1. another plan", "plan", t0))
    stage(tmp_path, 0, rows)
    errors = validate_staging(g1, tmp_path, [0], MODULES).errors
    assert [(p.module, p.timestamp) for p in errors] == [("plan", t0)]


def test_persistent_rows_closer_than_emitted_at_tolerance_warn(g1, ep0, tmp_path):
    rows = full_staging(ep0, g1.cameras)
    ts = [float(t) for t in ep0.timestamps]  # 30 fps: one frame apart is 0.033 s
    rows["plan"].append(L.make_row("assistant", "let go", "subtask", ts[1]))
    stage(tmp_path, 0, rows)
    report = validate_staging(g1, tmp_path, [0], MODULES)
    assert report.errors == []
    assert [p.message for p in report.warnings if "emitted_at" in p.message]

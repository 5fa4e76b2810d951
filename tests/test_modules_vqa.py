"""The vqa module against the fake server over real HTTP, plus coordinate conversion."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from test_fake_server import read_log, run_fake
from test_modules_plan import errors_of, frame_set, run_module, settings_for

from episcribe.modules.vqa.answers import vqa_answer_problem
from episcribe.modules.vqa.run import convert_answer


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """One fake server process for this file's tests: (base_url, request_log)."""
    with run_fake(tmp_path_factory.mktemp("fake")) as served:
        yield served


TOP, WRIST = "observation.images.top", "observation.images.wrist"
G1 = "observation.images.cam_high"


def test_vqa_instructions_are_computed_once_per_question_type(synth_small, tmp_path):
    with run_fake(tmp_path) as (base, log):
        result = run_module("vqa", synth_small, 0, base, tmp_path / "m.jsonl")
        calls = [e for e in read_log(log) if e["status"] == 200]
    assert result.rows and len(calls) > 5 and all(c["n_images"] == 1 for c in calls)
    # Each request is its type's instructions, one frame, then the camera and task: only
    # the first call of a type (calls overlap, so not always the first logged) computes
    # the instructions; every other one finds them cached.
    uncached = Counter(c["kind"] for c in calls if c["cached_tokens"] == 0)
    assert uncached == Counter({kind: 1 for kind in {c["kind"] for c in calls}})


def pairs(rows):
    return Counter((r["timestamp"], r["camera"], r["role"]) for r in rows)


def points(answer: dict):
    if "detections" in answer:
        return [tuple(d["bbox"][i : i + 2]) for d in answer["detections"] for i in (0, 2)]
    return [tuple(answer["point"])] if "point" in answer else []


def test_one_pair_per_frame_each_camera_on_its_own_frames_never_frame_0(
    synth_small, fake, tmp_path
):
    res = run_module("vqa", synth_small, 3, fake[0], tmp_path / "m.jsonl")
    ticks = sorted({r["timestamp"] for r in res.rows})
    assert set(ticks) <= frame_set(res.episode)
    counted = pairs(res.rows)
    assert set(counted.values()) == {1}
    by_camera = {
        cam: sorted(t for t, c, role in counted if c == cam and role == "user")
        for cam in (TOP, WRIST)
    }
    # 4 s at 1 Hz, 10 fps: ticks at 0, 1, 2, 3 s; frame 0 is the robot's first reply's,
    # and the second camera takes the next free frame: LeRobot trains one VQA pair a frame
    assert by_camera == {
        TOP: pytest.approx([0.1, 1.0, 2.0, 3.0]),
        WRIST: pytest.approx([0.2, 1.1, 2.1, 3.1]),
    }
    assert len(ticks) == 8 and len(res.rows) == 2 * 8 and res.skipped == 0
    assert all(r["style"] == "vqa" for r in res.rows)
    for row in res.rows:
        if row["role"] == "assistant":
            assert vqa_answer_problem(row["content"]) is None
    kinds = Counter(res.kinds)
    assert sum(kinds.values()) == 8 and len(kinds) >= 2, "question types are drawn, not fixed"
    assert not errors_of(res.episode, (TOP, WRIST), {"vqa": res})


def test_restrict_to_default_camera_asks_only_that_camera(synth_small, fake, tmp_path):
    settings = settings_for("vqa", restrict_to_default_camera=True, vqa_emission_hz=2.0)
    res = run_module(
        "vqa",
        synth_small,
        0,
        fake[0],
        tmp_path / "m.jsonl",
        settings=settings,
        vlm={"camera_key": WRIST},
    )
    assert {r["camera"] for r in res.rows} == {WRIST}
    assert len(res.rows) == 2 * 8


@pytest.mark.parametrize("space", ["pixels", "normalized_1000"])
def test_every_coordinate_is_inside_the_source_image(space, g1_source, fake, tmp_path):
    # Frames are sent at 320x240 (image_max_side), so pixel answers must be scaled x2.
    res = run_module(
        "vqa",
        g1_source,
        2,
        fake[0],
        tmp_path / "m.jsonl",
        settings=settings_for("vqa", coordinate_space=space, vqa_emission_hz=3.0),
        vlm={"image_max_side": 320},
    )
    answers = [json.loads(r["content"]) for r in res.rows if r["role"] == "assistant"]
    coords = [p for a in answers for p in points(a)]
    assert coords, "some answers carry coordinates"
    assert all(0 <= x <= 640 and 0 <= y <= 480 for x, y in coords)
    assert max(x for x, _ in coords) > 320, "converted to the 640x480 source, not the shown size"
    assert set(pairs(res.rows).values()) == {1}
    assert not errors_of(res.episode, (G1,), {"vqa": res})


def test_same_seed_same_questions_and_answers(synth_small, fake, tmp_path):
    a = run_module("vqa", synth_small, 1, fake[0], tmp_path / "a.jsonl", seed=7)
    b = run_module("vqa", synth_small, 1, fake[0], tmp_path / "b.jsonl", seed=7)
    assert json.dumps(a.rows) == json.dumps(b.rows)
    assert sorted(a.kinds) == sorted(b.kinds)  # the metrics list calls as they finish
    rows = {
        json.dumps(run_module("vqa", synth_small, 1, fake[0], tmp_path / "c.jsonl", seed=s).rows)
        for s in range(3)
    }
    assert len(rows) > 1, "the seed decides the question types"


def test_failed_answers_are_skipped_and_counted(synth_small, tmp_path):
    with run_fake(tmp_path, "--fault-rate", "1", "--fault-cycle", "schema") as (base, _):
        res = run_module("vqa", synth_small, 0, base, tmp_path / "m.jsonl")
    assert res.rows == [] and res.skipped == 8


# -- conversion ------------------------------------------------------------------------


def test_normalized_answers_become_source_pixels():
    box = {"detections": [{"label": "cup", "bbox_format": "xyxy", "bbox": [500, 250, 1000, 1000]}]}
    got = convert_answer("bbox", box, "normalized_1000", (768, 576), (640, 480))
    assert got == {
        "detections": [{"label": "cup", "bbox_format": "xyxy", "bbox": [320, 120, 640, 480]}]
    }
    point = {"label": "cap", "point_format": "xy", "point": [384, 288]}
    assert convert_answer("keypoint", point, "pixels", (768, 576), (640, 480))["point"] == [
        320,
        240,
    ]


def test_boxes_are_clipped_and_empty_or_outside_answers_dropped():
    def box(*coords):
        return {"label": "cup", "bbox_format": "xyxy", "bbox": list(coords)}

    dets = {"detections": [box(-50, -10, 100, 50), box(700, 10, 900, 60), box(30, 30, 30, 90)]}
    got = convert_answer("bbox", dets, "pixels", (640, 480), (640, 480))
    assert got == {"detections": [box(0, 0, 100, 50)]}  # off-image and zero-area boxes dropped
    assert (
        convert_answer(
            "bbox", {"detections": [box(700, 0, 800, 10)]}, "pixels", (640, 480), (640, 480)
        )
        is None
    )
    outside = {"label": "cup", "point_format": "xy", "point": [1200, 10]}
    assert convert_answer("keypoint", outside, "normalized_1000", (640, 480), (640, 480)) is None
    assert convert_answer("count", {"label": "cups", "count": -1}, "pixels", (1, 1), (1, 1)) is None
    assert (
        convert_answer(
            "spatial",
            {"subject": "cup", "relation": " ", "object": "bowl"},
            "pixels",
            (1, 1),
            (1, 1),
        )
        is None
    )
    assert convert_answer("attribute", None, "pixels", (1, 1), (1, 1)) is None

"""Depth streams (LeRobot's video.is_depth_map) never reach the model."""

from __future__ import annotations

import json

import pytest
from smk import Workspace

from episcribe.config import resolve
from episcribe.errors import ConfigError, DatasetError
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.pipeline.workflow import WorkflowPlan

COLOUR, DEPTH = "observation.images.front", "observation.images.depth"
SIZE = (160, 120)  # the colour camera's; the synthetic depth stream is 80x60


def test_no_request_carries_a_depth_frame_and_the_default_camera_is_the_colour_one(
    make_synth, tmp_path
):
    root = make_synth(episodes=2, seconds=4, cameras=[COLOUR], depth_cameras=[DEPTH], size=SIZE)
    info = json.loads((root / "meta/info.json").read_text())
    assert next(k for k, f in info["features"].items() if f["dtype"] == "video") == DEPTH
    config = dict(plan__n_task_rephrasings=0, interjections__interjection_min_t=0.5)
    ws = Workspace(tmp_path / "ws", root, **config)
    ws.run()
    calls = [r for r in ws.fake_requests() if r["status"] == 200]
    with_images = [r for r in calls if r["n_images"]]
    assert {r["kind"] for r in with_images} >= {"segment", "interjection"}
    assert any(r["kind"].startswith("vqa_") for r in with_images)
    # VQA shows single frames: all of them the colour camera's, none the depth stream's
    vqa = [r for r in with_images if r["kind"].startswith("vqa_")]
    assert {tuple(size) for r in vqa for size in r["image_sizes"]} == {SIZE}
    assert not [r for r in calls for size in r["image_sizes"] if tuple(size) == (80, 60)]
    staged = (ws.root / "results/synth/staging/episode_000000/vqa.jsonl").read_text()
    assert {json.loads(line)["camera"] for line in staged.splitlines()} == {COLOUR}
    written = json.loads((ws.root / "results/synth/annotated/meta/episcribe.json").read_text())
    assert written["model"]["camera_key"] == COLOUR


def plan_for(root, tmp_path, **sections) -> WorkflowPlan:
    return WorkflowPlan(resolve({"dataset": {"root": str(root)}, **sections}), tmp_path)


def test_a_dataset_of_depth_streams_only_is_refused_by_the_modules_that_show_images(
    make_synth, tmp_path
):
    root = make_synth(episodes=1, seconds=1, cameras=[], depth_cameras=[DEPTH])
    dataset = LeRobotDataset.open(root)
    assert (dataset.cameras, dataset.depth_streams) == ((), (DEPTH,))
    with pytest.raises(DatasetError) as err:
        plan_for(root, tmp_path)
    message = str(err.value)
    assert f"its only video streams are depth maps ({DEPTH})" in message
    assert "plan, interjections, plan_update, vqa need a colour camera" in message
    assert "interjections.enabled=false plan.enabled=false vqa.enabled=false" in message
    # the robot's own signals need no picture
    off = {"enabled": False}
    signals_only = plan_for(root, tmp_path, plan=off, interjections=off, vqa=off)
    assert signals_only.modules == ["signals"]


def test_a_depth_stream_named_as_the_camera_is_refused(make_synth, tmp_path):
    root = make_synth(episodes=1, seconds=1, cameras=[COLOUR], depth_cameras=[DEPTH])
    with pytest.raises(ConfigError, match=f"vlm.camera_key '{DEPTH}' .* is a depth stream"):
        plan_for(root, tmp_path, vlm={"camera_key": DEPTH})

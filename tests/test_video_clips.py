"""plan.use_video_url: the describe and segment calls carry a playable mp4 clip.

A real run on g1_bottle (AV1) through the workflow and the fake server; the server keeps
every clip it was sent, and the test plays each one back with PyAV.
"""

from __future__ import annotations

import base64
import io
import json

import av
import pytest
from PIL import Image
from smk import Workspace
from test_fake_server import SCHEMAS, chat, post, run_fake

from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.lerobot.frames import encode_mp4, mp4_data_url
from episcribe.modules.plan.run import plan_windows
from episcribe.vlm.fake_limits import MP4_PREFIX

FPS = 2.0
SETTINGS = dict(
    plan__use_video_url="true",
    plan__video_fps=FPS,
    plan__n_task_rephrasings=0,
    plan__subtask_describe_first="true",  # both clip calls: describe, then segment
    interjections__enabled="false",
    vqa__enabled="false",
)


@pytest.fixture(scope="module")
def video_run(g1_source, tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("video") / "ws", g1_source, **SETTINGS)
    ws.run()
    return ws


def test_describe_and_segment_calls_carry_a_playable_clip_of_the_episode(video_run, g1_source):
    dataset = LeRobotDataset.open(g1_source)
    calls = [r for r in video_run.fake_requests() if r["kind"] in ("describe", "segment")]
    assert sorted(r["kind"] for r in calls) == ["describe"] * 3 + ["segment"] * 3
    clips = {}
    for call in calls:
        assert call["status"] == 200 and call["n_images"] == 0  # the clip replaces the frames
        (video,) = call["videos"]
        clips.setdefault(video["sha256"], video)
    assert len(clips) == 3  # one per episode, shared by its describe and segment calls

    expected = {}
    for index in dataset.episode_indices():
        (window,) = plan_windows(dataset.load_episode(index).timestamps, FPS, 480, 0, 20)
        expected[len(window)] = window
    for sha, video in clips.items():
        path = video_run.server_dir / "clips" / f"{sha}.mp4"
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = list(container.decode(stream))
            rate = float(stream.average_rate)
        assert rate == FPS
        assert len(frames) == video["frames"]
        window = expected[len(frames)]  # the episode whose sampled frames these are
        # The clip plays the whole episode: one frame per 1/FPS s from its first to last.
        span = window[-1] - window[0]
        assert abs(len(frames) / rate - (span + 1 / FPS)) <= 1 / FPS
        assert max(frames[0].width, frames[0].height) <= 768
        assert (frames[0].width, frames[0].height) == (video["width"], video["height"])


def test_the_clips_tokens_reach_the_usage_the_client_records(video_run):
    calls = [r for r in video_run.fake_requests() if r.get("videos")]
    video_tokens = sum(v["tokens"] for r in calls for v in r["videos"])
    assert video_tokens > 0
    metrics = video_run.root / "results" / "g1_bottle" / "jobs" / "annotate_plan"
    records = [
        json.loads(line)
        for path in metrics.glob("*.metrics.jsonl")
        for line in path.read_text().splitlines()
    ]
    prompt_tokens = sum(r["prompt_tokens"] for r in records if r["kind"] in ("describe", "segment"))
    assert prompt_tokens > video_tokens


def test_clips_have_even_sides_within_max_side_and_every_frame():
    images = [Image.new("RGB", (641, 361), (10 * i, 80, 30)) for i in range(5)]
    with av.open(io.BytesIO(encode_mp4(images, 2.0, max_side=320))) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 5
    assert (frames[0].width, frames[0].height) == (320, 180)


def test_the_fake_server_refuses_a_clip_it_cannot_play(tmp_path):
    with run_fake(tmp_path) as (base, _):
        url = mp4_data_url([Image.new("RGB", (64, 48))] * 4, 2.0)
        whole = base64.b64decode(url.removeprefix(MP4_PREFIX))
        cut = MP4_PREFIX + base64.b64encode(whole[: len(whole) // 3]).decode()
        for clip, status in ((cut, 400), (url, 200)):
            body = chat("describe", SCHEMAS["describe"], "Frame timestamps (s): 0.0")
            body["messages"][0]["content"].append({"type": "video_url", "video_url": {"url": clip}})
            got, payload = post(base, body)
            assert got == status, payload
        assert payload["usage"]["prompt_tokens"] >= 2 * 2 * 2  # 2 temporal x 2 x 2 patches

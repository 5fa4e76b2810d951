"""The report: rendering from hand-made staging rows, and `snakemake --report` end to end.

Rendering tests use a synthetic dataset and rows written by hand (so they do not depend
on the modules); the workflow test runs the real workflow with the fake model server,
builds report.html, checks what it embeds and takes a headless Chromium screenshot
(saved under tests/artifacts/, or $EPISCRIBE_TEST_ARTIFACTS).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.lerobot.frames import decode_frames
from episcribe.lerobot.language import make_row, speech_atom
from episcribe.pipeline.staging import staging_file, write_rows
from episcribe.report.build import (
    MAX_OVERLAY_EPISODES,
    MAX_TIMELINES,
    build_report,
    report_episodes,
    sample_episodes,
    summarize_run,
)
from episcribe.report.draw import KIND_COLOURS, PALETTE
from episcribe.report.notes import load_notes, say_text
from episcribe.report.overlays import MAX_VQA_PANELS, draw_answer, pick_vqa, render_vqa_sheet
from episcribe.report.summary import summary_html
from episcribe.report.timeline import (
    LEFT,
    RIGHT,
    STRIP_FRAMES,
    WIDTH,
    render_timeline,
    strip_slices,
    strip_times,
)
from episcribe.report.usage import USAGE_COLUMNS, read_metrics, usage, usage_csv
from episcribe.report.video import Clip, panel_frames, strip_frames

MODULES = ["plan", "interjections", "plan_update", "vqa"]
ARTIFACTS = Path(os.environ.get("EPISCRIBE_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))


def vqa_answer(kind: int, w: int, h: int) -> tuple[str, dict]:
    return [
        (
            "Where is the red block?",
            {
                "detections": [
                    {
                        "label": "red block",
                        "bbox_format": "xyxy",
                        "bbox": [w // 5, h // 4, w // 2, 3 * h // 4],
                    }
                ]
            },
        ),
        (
            "Point at the gripper.",
            {"label": "gripper", "point_format": "xy", "point": [w // 2, h // 3]},
        ),
        ("How many blocks are visible?", {"label": "block", "count": 2}),
        ("What colour is the bowl?", {"label": "bowl", "attribute": "colour", "value": "blue"}),
        ("Where is the block?", {"subject": "block", "relation": "left of", "object": "bowl"}),
    ][kind % 5]


def stage_episode(dataset: LeRobotDataset, staging: Path, index: int, vqa_every: int = 5) -> None:
    """Rows like the modules write: 3 subtasks, plans, memories, speech, an interjection, VQA."""
    ep = dataset.load_episode(index)
    ts = [float(t) for t in ep.timestamps]
    n = len(ts)
    subtasks = [
        (ts[0], "reach toward the red block with the open gripper"),
        (ts[n // 3], "grasp the red block"),
        (ts[2 * n // 3], "carry the block over the bowl and release it"),
    ]
    plan = [make_row("user", ep.task, "task_aug", ts[0], None, None)]
    for k, (t, text) in enumerate(subtasks):
        plan.append(make_row("assistant", text, "subtask", t, None, None))
        left = "\n".join(f"{j + 1}. {s}" for j, (_, s) in enumerate(subtasks[k:]))
        plan.append(make_row("assistant", left, "plan", t, None, None))
        if k:
            plan.append(
                make_row("assistant", f"I did: {subtasks[k - 1][1]}.", "memory", t, None, None)
            )
    write_rows(staging_file(staging, index, "plan"), plan)
    t_int = subtasks[2][0]
    write_rows(
        staging_file(staging, index, "interjections"),
        [
            speech_atom("Sure, picking up the block.", ts[0]),
            make_row("user", "Put it down gently please.", "interjection", t_int, None, None),
            speech_atom("OK, gently.", t_int),
        ],
    )
    write_rows(
        staging_file(staging, index, "plan_update"),
        [make_row("assistant", "1. put the block down gently", "plan", t_int, None, None)],
    )
    vqa = []
    for cam in dataset.cameras:
        seg = dataset.episode_info(index).videos[cam]
        for k, t in enumerate(ts[::vqa_every]):
            question, answer = vqa_answer(k, seg.width, seg.height)
            vqa.append(make_row("user", question, "vqa", t, cam, None))
            vqa.append(make_row("assistant", json.dumps(answer), "vqa", t, cam, None))
    write_rows(staging_file(staging, index, "vqa"), vqa)


@pytest.fixture(scope="module")
def staged(tmp_path_factory, synth_small):
    dataset = LeRobotDataset.open(synth_small)
    staging = tmp_path_factory.mktemp("staging")
    for index in dataset.episode_indices():
        stage_episode(dataset, staging, index)
    return dataset, staging


def test_collect_turns_rows_into_spans_markers_and_vqa(staged):
    dataset, staging = staged
    episode, notes = load_notes(dataset, staging, 1, MODULES)
    assert [s.text for s in notes.subtasks] == [
        "reach toward the red block with the open gripper",
        "grasp the red block",
        "carry the block over the bowl and release it",
    ]
    # Spans cover the episode without gaps, the last one to the end of the last frame.
    assert notes.subtasks[0].start == float(episode.timestamps[0])
    for a, b in zip(notes.subtasks, notes.subtasks[1:], strict=False):
        assert a.end == b.start
    assert notes.subtasks[-1].end == pytest.approx(float(episode.timestamps[-1]) + 0.1, abs=1e-5)
    kinds = [m.kind for m in notes.markers]
    # 4 staged plan rows; the refreshed one replaces the plan row at its interjection.
    assert kinds.count("plan") == 3 and kinds.count("memory") == 2
    assert [m.text for m in notes.markers if m.kind == "say"] == [
        "Sure, picking up the block.",
        "OK, gently.",
    ]
    assert [m.text for m in notes.markers if m.kind == "interjection"] == [
        "Put it down gently please."
    ]
    shapes = {v.shape for v in notes.vqa}
    assert shapes == {"bbox", "keypoint", "count", "attribute", "spatial"}
    assert {v.camera for v in notes.vqa} == set(dataset.cameras)
    assert all(v.question for v in notes.vqa)


def test_speech_arguments_as_json_text_are_read():
    row = speech_atom("hello", 0.0)
    row["tool_calls"][0]["function"]["arguments"] = json.dumps({"text": "hello"})
    assert say_text(row) == "hello"


def test_missing_staging_files_are_named_not_fatal(staged, tmp_path):
    dataset, _ = staged
    _, notes = load_notes(dataset, tmp_path, 0, MODULES)
    assert notes.missing == MODULES and notes.subtasks == [] and notes.vqa == []
    image = render_timeline(notes, [(0.0, None)], dataset.cameras[0])
    assert image.width == WIDTH


def test_timeline_shows_real_frames_bars_and_texts(staged):
    dataset, staging = staged
    episode, notes = load_notes(dataset, staging, 2, MODULES)
    times = strip_times(notes, episode.timestamps, STRIP_FRAMES)
    assert len(times) == STRIP_FRAMES and times == sorted(times)
    assert set(times) <= {float(t) for t in episode.timestamps}
    frames = decode_frames(dataset.episode_info(2).videos[dataset.cameras[0]], times)
    image = render_timeline(
        notes, list(zip(times, frames, strict=True)), dataset.cameras[0], cameras=dataset.cameras
    )
    assert image.width == WIDTH
    assert 500 < image.height < 1400
    px = np.asarray(image)
    # The first subtask bar is filled with the first palette colour at its start.
    bar = px[:, LEFT + 5]
    assert (bar == PALETTE[0]).all(axis=1).sum() >= 20
    # The third subtask's colour appears too (a bar, a legend tag).
    assert (px == PALETTE[2]).all(axis=2).sum() > 200
    # The frame strip holds frames, not a placeholder: many distinct colours.
    strip = px[60:200, LEFT : WIDTH - RIGHT].reshape(-1, 3)
    assert len(np.unique(strip, axis=0)) > 200


def test_bbox_is_drawn_where_the_answer_says():
    image = Image.new("RGB", (200, 100), (128, 128, 128))
    answer = {"detections": [{"label": "", "bbox_format": "xyxy", "bbox": [20, 30, 120, 80]}]}
    out = np.asarray(draw_answer(image, answer))
    colour = PALETTE[0]
    for x, y in [(20, 55), (120, 55), (70, 30), (70, 80)]:  # the four edges
        assert tuple(out[y, x]) == colour, (x, y)
    assert tuple(out[55, 70]) == (128, 128, 128)  # inside: untouched
    assert tuple(out[10, 10]) == (128, 128, 128)  # outside: untouched
    assert np.asarray(image).mean() == 128  # the input is not modified


def test_coordinates_are_scaled_with_the_image():
    # An answer in 640x480 source pixels drawn on a 320x240 thumbnail.
    image = Image.new("RGB", (320, 240), (0, 0, 0))
    answer = {"detections": [{"label": "x", "bbox_format": "xyxy", "bbox": [400, 200, 600, 400]}]}
    out = np.asarray(draw_answer(image, answer, scale=0.5))
    assert tuple(out[150, 200]) == PALETTE[0]  # left edge at x=200
    assert tuple(out[150, 250]) == (0, 0, 0)


def test_keypoint_marks_the_point():
    image = Image.new("RGB", (200, 200), (0, 0, 0))
    answer = {"label": "", "point_format": "xy", "point": [100, 60]}
    out = np.asarray(draw_answer(image, answer))
    ring = out[50:71, 90:111]
    assert (ring == PALETTE[0]).all(axis=2).sum() > 20
    assert (out[150:, :] == 0).all() and (out[:, :60] == 0).all()  # nothing far away


def test_pick_vqa_caps_and_prefers_grounded_answers(staged):
    dataset, staging = staged
    _, notes = load_notes(dataset, staging, 0, MODULES)
    items = [v for v in notes.vqa if v.camera == dataset.cameras[0]] * 3
    chosen = pick_vqa(items, cap=6)
    assert len(chosen) == 6
    assert sum(v.shape in ("bbox", "keypoint") for v in chosen) >= 4
    assert [v.t for v in chosen] == sorted(v.t for v in chosen)
    assert pick_vqa(items[:3], cap=6) == items[:3]


def test_overlay_sheet_has_a_panel_per_frame_with_boxes(staged):
    dataset, staging = staged
    _, notes = load_notes(dataset, staging, 0, MODULES)
    cam = dataset.cameras[0]
    pairs = [v for v in notes.vqa if v.camera == cam]
    items = pick_vqa(pairs)
    assert len(pairs) > MAX_VQA_PANELS == len(items)
    frames = decode_frames(dataset.episode_info(0).videos[cam], [v.t for v in items])
    sheet = render_vqa_sheet(notes, cam, list(zip(items, frames, strict=True)), len(pairs))
    rows = -(-len(items) // 2)
    assert sheet.width == 2 * (360 + 14 + 330) + 3 * 14
    assert sheet.height >= 60 + rows * 270
    # The first panel is a bbox answer: its box edge sits at bbox x1 (scaled) in the panel.
    assert items[0].shape == "bbox"
    seg = dataset.episode_info(0).videos[cam]
    x1, y1, x2, y2 = items[0].parsed["detections"][0]["bbox"]
    scale = 360 / seg.width
    px = np.asarray(sheet)
    x = 14 + round(x1 * scale)
    y = 60 + round((y1 + y2) / 2 * scale)
    assert tuple(px[y, x]) == PALETTE[0]
    # Frames that come scaled to the panel already (as build_report has them converted)
    # get the boxes at the same place: coordinates stay the source's.
    scaled = [im.resize((360, round(seg.height * scale))) for im in frames]
    sheet2 = render_vqa_sheet(
        notes, cam, list(zip(items, scaled, strict=True)), len(pairs), source_width=seg.width
    )
    assert tuple(np.asarray(sheet2)[y, x]) == PALETTE[0]


def test_usage_aggregates_metrics(tmp_path):
    path = tmp_path / "results" / "synth" / "jobs" / "annotate_vqa" / "episode_000000.metrics.jsonl"
    path.parent.mkdir(parents=True)
    records = [
        {
            "kind": "vqa_bbox",
            "latency_s": float(k),
            "prompt_tokens": 100,
            "completion_tokens": 10,
            "retries": k % 2,
            "reprompted": k == 3,
            "outcome": "ok" if k < 9 else "invalid",
        }
        for k in range(1, 11)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    rows = usage(read_metrics([path, tmp_path / "missing.jsonl"]), ["plan", "vqa"])
    plan, vqa, kind, total = rows
    assert plan["module"] == "plan" and plan["calls"] == 0
    assert vqa["kind"] == "all" and kind["kind"] == "vqa_bbox"
    assert vqa["calls"] == 10 and vqa["failed"] == 2 and vqa["invalid"] == 2
    assert vqa["retries"] == 5 and vqa["reprompted"] == 1
    assert vqa["prompt_tokens"] == 1000 and vqa["completion_tokens"] == 100
    assert vqa["latency_p50_s"] == pytest.approx(5.5)
    assert vqa["latency_p90_s"] == pytest.approx(9.1)
    assert vqa["latency_max_s"] == 10
    assert total["module"] == "total" and total["calls"] == 10
    parsed = list(csv.DictReader(io.StringIO(usage_csv(rows))))
    assert parsed[1]["calls"] == "10" and list(parsed[0]) == list(USAGE_COLUMNS)


def test_usage_reads_clean_files_fast_and_skips_bad_lines(tmp_path):
    """Arrow reads whole modules at once; a file it cannot read is read line by line."""
    d = tmp_path / "annotate_plan"
    d.mkdir()
    record = {"kind": "segment", "latency_s": 0.5, "prompt_tokens": 10, "outcome": "ok"}
    lines = [json.dumps({**record, "retries": k % 2, "extra": {"x": 1}}) for k in range(6)]
    (d / "episode_000000.metrics.jsonl").write_text("\n".join(lines[:3]) + "\n")
    (d / "episode_000001.metrics.jsonl").write_text("\n".join(lines[3:]))  # no final \n
    (d / "episode_000002.metrics.jsonl").write_text(
        lines[0] + "\n" + json.dumps({**record, "latency_s": "slow"}) + '\n{"kind": "seg'
    )
    (tmp_path / "annotate_vqa").mkdir()
    (tmp_path / "annotate_vqa" / "episode_000000.metrics.jsonl").write_text(
        json.dumps({"kind": "vqa_bbox", "latency_s": 2, "outcome": "invalid"}) + "\n"
    )
    paths = sorted(tmp_path.glob("annotate_*/*.metrics.jsonl"))
    rows = usage(read_metrics(paths), ["plan", "vqa"])
    plan, segment, vqa, bbox, total = rows
    assert plan["calls"] == segment["calls"] == 7  # 6 + the one good line of the bad file
    assert plan["prompt_tokens"] == 70 and plan["retries"] == 3 and plan["failed"] == 0
    assert vqa["calls"] == 1 and vqa["invalid"] == 1 and vqa["latency_max_s"] == 2.0
    assert total["calls"] == 8


def test_summary_html_shows_validation_styles_and_usage():
    validation = {
        "ok": False,
        "episodes_checked": 2,
        "errors": 1,
        "warnings": 0,
        "rows_per_style": {"subtask": 6, "null": 2},
        "problems": [
            {
                "severity": "error",
                "episode": 1,
                "module": "plan",
                "timestamp": 0.5,
                "message": "a <bad> row",
            }
        ],
    }
    page = summary_html(
        dataset="synth",
        episodes=[0, 1],
        shown=[0, 1],
        modules=["plan"],
        model={"model_id": "m"},
        validation=validation,
        usage_rows=usage([], ["plan"]),
    )
    assert "FAILED" in page and "a &lt;bad&gt; row" in page
    assert "speech (say tool call)" in page and "Model usage" in page
    assert "<script" not in page


def _build_report(dataset, staging, out, episodes, **caps):
    """The whole report of the staged episodes into ``out``, no metrics or validation."""
    return build_report(
        dataset_root=dataset.root,
        staging_dir=staging,
        episodes=episodes,
        modules=MODULES,
        model={"model_id": "fake", "camera_key": None},
        metrics_paths=[],
        validation_json=None,
        timelines_dir=out / "timelines",
        overlays_dir=out / "vqa",
        summary_path=out / "summary.html",
        usage_path=out / "usage.csv",
        **caps,
    )


def test_build_report_renders_every_timeline_and_sampled_overlays(staged, tmp_path):
    dataset, staging = staged
    out = tmp_path / "report"
    result = _build_report(dataset, staging, out, dataset.episode_indices())
    episodes = dataset.episode_indices()  # six: a timeline each, overlays for four
    assert MAX_OVERLAY_EPISODES == 4 < len(episodes) < MAX_TIMELINES
    assert result["timelines"] == len(episodes)
    assert sorted(p.name for p in (out / "timelines").iterdir()) == [
        f"episode_{i:06d}.png" for i in episodes
    ]
    overlaid = [0, 2, 3, 5]
    assert result["overlays"] == len(overlaid) * len(dataset.cameras)
    assert sorted(p.name for p in (out / "vqa").iterdir()) == [
        f"episode_{i:06d}__{cam}.jpg" for i in overlaid for cam in dataset.cameras
    ]
    for i in overlaid:
        for cam in dataset.cameras:
            with Image.open(out / "vqa" / f"episode_{i:06d}__{cam}.jpg") as im:
                assert im.format == "JPEG" and im.width > 1000
    with Image.open(out / "timelines" / "episode_000000.png") as im:
        assert im.format == "PNG" and im.width == WIDTH


def test_sample_episodes_is_even_and_bounded():
    assert sample_episodes(range(10), cap=20) == list(range(10))
    picked = sample_episodes(range(1000), cap=50)
    assert len(picked) == 50 and picked[0] == 0 and picked[-1] == 999
    gaps = np.diff(picked)
    assert gaps.min() >= 20 and gaps.max() <= 21


def test_summary_names_the_drawn_episodes_without_the_images(tmp_path):
    """summarize_run computes which episodes have images as render_images does, from the
    plan's episodes (or their sample: report_episodes is idempotent)."""
    episodes = list(range(1000))
    shown, overlaid = report_episodes(episodes)
    assert report_episodes(shown) == (shown, overlaid)
    assert len(shown) == MAX_TIMELINES and set(overlaid) <= set(shown)
    result = summarize_run(
        dataset_name="synth",
        episodes=episodes,
        modules=MODULES,
        model={"model_id": "fake", "camera_key": "cam"},
        metrics_paths=[],
        validation_json=tmp_path / "missing.json",
        summary_path=tmp_path / "summary.html",
        usage_path=tmp_path / "usage.csv",
    )
    assert result["calls"] == 0
    page = (tmp_path / "summary.html").read_text()
    assert f"Timelines are drawn for {MAX_TIMELINES} evenly spaced episodes" in page
    assert ", ".join(map(str, overlaid)) in page and "No validation report" in page
    assert (tmp_path / "usage.csv").read_text().startswith("module,kind,calls")


def test_build_report_is_bounded_by_its_caps(staged, tmp_path):
    dataset, staging = staged
    out = tmp_path / "report"
    episodes = dataset.episode_indices()  # six
    result = _build_report(dataset, staging, out, episodes, max_timelines=4, max_overlay_episodes=2)
    timelines = sorted(p.name for p in (out / "timelines").iterdir())
    overlays = sorted(p.name for p in (out / "vqa").iterdir())
    assert result["timelines"] == 4 and len(timelines) == 4
    assert timelines[0] == "episode_000000.png" and timelines[-1] == "episode_000005.png"
    overlaid = sorted({name.split("__")[0] for name in overlays})
    assert overlaid == ["episode_000000", "episode_000005"]  # a subset of the timelines
    assert result["overlays"] == len(overlays) == 2 * len(dataset.cameras)
    page = (out / "summary.html").read_text()
    assert "Timelines are drawn for 4 evenly spaced episodes of 6" in page
    assert "VQA overlays are drawn for 2 evenly spaced episodes of 6: 0, 5" in page
    # One decode per strip frame and panel: none from a GOP's middle here (GOP 2 s,
    # every VQA tick at a keyframe has a keyframe to take).
    assert result["keyframes"] <= 4 * STRIP_FRAMES + 2 * 2 * MAX_VQA_PANELS


def test_strip_takes_a_keyframe_in_each_slice(staged):
    dataset, staging = staged
    episode, notes = load_notes(dataset, staging, 2, MODULES)
    segment = dataset.episode_info(2).videos[dataset.cameras[0]]
    centres = strip_times(notes, episode.timestamps)
    slices = strip_slices(notes, len(centres))
    with Clip(segment) as clip:
        strip = strip_frames(clip, slices, centres)
        keyframes = sum(clip.is_keyframe(t) for t, _ in strip)
        thumbs = strip_frames(clip, slices, centres, (40, 30))
    # Keyframes come as thumbnails when asked (scaled while converted), others full size.
    assert [im.size for t, im in thumbs if round(t, 4) in (0.0, 2.0)] == [(40, 30)] * 2
    assert [t for t, _ in thumbs] == [t for t, _ in strip]
    times = [t for t, _ in strip]
    assert len(strip) == len(slices) == STRIP_FRAMES
    assert times == sorted(set(times))
    frame_times = {round(float(t), 4) for t in episode.timestamps}
    for (start, end), t in zip(slices, times, strict=True):
        assert start - 1e-4 <= t < end and round(t, 4) in frame_times
    # A 2-s GOP and 0.4-s slices: every fifth slice holds a keyframe, the others do not
    # and take the frame at their centre.
    assert keyframes == 2
    # Each image is the very frame at its time, as the exact (one-pass) reader decodes it.
    exact = decode_frames(segment, times)
    for (t, image), reference in zip(strip, exact, strict=True):
        diff = np.abs(np.asarray(image, dtype=int) - np.asarray(reference, dtype=int))
        assert diff.max() <= 2, t


def test_panels_prefer_keyframes_and_show_the_exact_frames(staged):
    dataset, staging = staged
    _, notes = load_notes(dataset, staging, 1, MODULES)
    cam = dataset.cameras[1]
    segment = dataset.episode_info(1).videos[cam]
    pairs = [v for v in notes.vqa if v.camera == cam]
    with Clip(segment) as clip:
        cheap = [v for v in pairs if clip.is_keyframe(v.t)]
        chosen = pick_vqa(pairs, cap=3, cheap=lambda v: clip.is_keyframe(v.t))
        images = panel_frames(clip, [v.t for v in chosen] + [pairs[1].t])
    assert [v.t for v in cheap] == [0.0, 2.0]  # keyframes every 2 s
    assert set(map(id, cheap)) <= set(map(id, chosen)) and len(chosen) == 3
    # A non-keyframe (decoded from its GOP) too: every image is its exact frame.
    exact = decode_frames(segment, [v.t for v in chosen] + [pairs[1].t])
    for image, reference in zip(images, exact, strict=True):
        diff = np.abs(np.asarray(image, dtype=int) - np.asarray(reference, dtype=int))
        assert diff.max() <= 2


# -- the workflow and the HTML report -------------------------------------------------
def report_results(html_text: str) -> dict:
    match = re.search(r"var results = (\{.*?\});\n", html_text, re.S)
    assert match, "no results in report.html"
    return json.loads(match.group(1))


def data_of(entry: dict) -> bytes:
    return base64.b64decode(entry["data_uri"].split(",", 1)[1])


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(install, env=env, capture_output=True)
    return shutil.which("chromium")


def screenshot(page: Path, png: Path, tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium, and it cannot be installed here (not root or no apt)")
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--hide-scrollbars", "--virtual-time-budget=5000", f"--screenshot={png}",
        "--window-size=1400,1000", page.resolve().as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), proc.stderr[-3000:]


@pytest.fixture(scope="module")
def workflow_report(tmp_path_factory):
    from smk import Workspace
    from synth import make_dataset

    data = make_dataset(
        tmp_path_factory.mktemp("data") / "synth", seed=5, episodes=3, seconds=4.0,
        episodes_per_file=2, size=(320, 240),
    )  # fmt: skip
    ws = Workspace(tmp_path_factory.mktemp("ws"), data)
    ws.first_run = ws.run()
    ws.report_run = ws.run("--report", "report.html")
    return ws


def test_workflow_builds_a_report_with_every_part(workflow_report):
    ws = workflow_report
    page = (ws.root / "report.html").read_text()
    results = report_results(page)
    for rule in ("render_report", "summarize_run"):
        assert rule in ws.first_run.rules
        assert (ws.root / f"logs/synth/{rule}/{rule}.log").is_file()
        assert (ws.root / f"benchmarks/synth/{rule}/{rule}.tsv").is_file()
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", page).group(1))
    assert set(categories) == {"Timelines", "VQA overlays", "Summary", "Validation"}
    assert len(categories["Summary"]["Other"]) == 2  # summary.html, usage.csv
    names = sorted(entry["name"] for entry in results.values())
    cameras = LeRobotDataset.open(ws.config["dataset__root"]).cameras
    for i in range(3):
        assert f"episode_{i:06d}.png" in names  # a timeline for every episode
        for cam in cameras:
            assert f"episode_{i:06d}__{cam}.jpg" in names
    summary = next(e for e in results.values() if e["name"] == "summary.html")
    html_text = data_of(summary).decode()
    for module in MODULES:
        assert f"<td>{module}</td>" in html_text
    assert "Model usage" in html_text and "PASSED" in html_text
    usage = list(csv.DictReader(io.StringIO(data_of(
        next(e for e in results.values() if e["name"] == "usage.csv")).decode())))  # fmt: skip
    total = next(r for r in usage if r["module"] == "total")
    assert int(total["calls"]) > 0
    timeline = next(e for e in results.values() if e["name"] == "episode_000000.png")
    assert "episode 000000" in timeline["caption"].lower()
    assert timeline["labels"] == {"episode": "000000"}


def test_second_run_does_not_rerender(workflow_report, tmp_path):
    run = workflow_report.run()
    assert "render_report" not in run.rules and "summarize_run" not in run.rules


def test_images_do_not_wait_for_validation(workflow_report):
    """render_report hangs off the staging files, beside validate_staging; only
    summarize_run (and write_dataset) come after the validation report."""
    dot = workflow_report.run("--forceall", "--dag").output
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, re.M))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)}
    assert ("validate_staging", "summarize_run") in edges
    assert ("validate_staging", "render_report") not in edges
    assert any(a.startswith("annotate_") and b == "render_report" for a, b in edges)
    assert ("render_report", "summarize_run") not in edges


def test_changed_staging_file_rerenders_images_and_summary(workflow_report):
    """The images hang off the staging files; the summary off the validation report,
    which every staging file feeds."""
    ws = workflow_report
    staging = staging_file(ws.root / "results/synth/staging", 1, "plan")
    rows = [json.loads(line) for line in staging.read_text().splitlines()]
    rows[0]["content"] += " (edited)"
    write_rows(staging, rows)
    run = ws.run()
    for rule in ("validate_staging", "render_report", "summarize_run"):
        assert rule in run.rules
    timeline = ws.root / "results/synth/report/timelines/episode_000001.png"
    assert timeline.stat().st_mtime >= staging.stat().st_mtime


def test_changed_validation_report_rerenders_only_the_summary(workflow_report):
    ws = workflow_report
    path = ws.root / "results/synth/validation/report.json"
    validation = json.loads(path.read_text())
    problem = {
        "severity": "warning",
        "episode": 2,
        "module": "vqa",
        "timestamp": 1.0,
        "message": "a warning added by the test",
    }
    validation["problems"].append(problem)
    validation["warnings"] += 1
    path.write_text(json.dumps(validation))
    run = ws.run()
    assert "summarize_run" in run.rules
    assert "render_report" not in run.rules and "validate_staging" not in run.rules
    page = (ws.root / "results/synth/report/summary.html").read_text()
    assert "a warning added by the test" in page


def open_result(page: Path, out: Path, category: str, name: str) -> Path:
    """A copy of report.html that opens one result on load, as a click on it would."""
    script = f"""<script>setTimeout(function () {{
  var key = Object.keys(results).find(function (k) {{ return results[k].name === "{name}"; }});
  var entry = results[key];
  app.setView({{navbarMode: "subcategory", category: "{category}",
    subcategory: Object.keys(categories["{category}"])[0],
    content: entry.mime_type === "text/html" ? "html" : "img",
    contentPath: entry.data_uri, resultPath: key}});
}}, 300);</script>"""
    text = page.read_text()
    end = text.rfind("</body>")
    out.write_text(text[:end] + script + text[end:])
    return out


def test_report_screenshots(workflow_report, tmp_path):
    """The landing page, a timeline, an overlay and the summary, as a browser shows them."""
    page = workflow_report.root / "report.html"
    cam = LeRobotDataset.open(workflow_report.config["dataset__root"]).cameras[0]
    shots = {
        "report.png": page,
        "report_timeline.png": open_result(
            page, tmp_path / "timeline.html", "Timelines", "episode_000001.png"
        ),
        "report_vqa.png": open_result(
            page, tmp_path / "vqa.html", "VQA overlays", f"episode_000001__{cam}.jpg"
        ),
        "report_summary.png": open_result(
            page, tmp_path / "summary.html", "Summary", "summary.html"
        ),
    }
    for name, html_page in shots.items():
        png = ARTIFACTS / name
        screenshot(html_page, png, tmp_path)
        with Image.open(png) as im:
            assert im.size == (1400, 1000)
            # A rendered page, not a blank one.
            small = np.asarray(im.convert("RGB").resize((140, 100))).reshape(-1, 3)
            assert len(np.unique(small, axis=0)) > 20, name


def test_each_gripper_gets_a_lane_with_its_keystates(synth_small, tmp_path):
    dataset = LeRobotDataset.open(synth_small)
    ts = [float(t) for t in dataset.load_episode(0).timestamps]
    keystates = [
        (ts[10], {"arm": "right", "kind": "grasp", "part": "hand"}),
        (ts[25], {"arm": "right", "kind": "release", "part": "hand"}),
        (ts[30], {"arm": "left", "kind": "rest", "part": "arm"}),
    ]
    rows = [make_row("assistant", json.dumps(k), "keystate", t) for t, k in keystates]
    write_rows(staging_file(tmp_path, 0, "signals"), rows)
    write_rows(
        staging_file(tmp_path, 0, "plan"),
        [make_row("assistant", "pick up the block", "subtask", ts[0])],
    )
    _, notes = load_notes(dataset, tmp_path, 0, ["signals", "plan"])
    assert notes.keystate_lanes == ["right hand", "left arm"]
    assert [(k.kind, k.lane) for k in notes.keystates] == [
        ("grasp", "right hand"),
        ("release", "right hand"),
        ("rest", "left arm"),
    ]
    with_lanes = render_timeline(notes, [(ts[0], None)], dataset.cameras[0])
    notes.keystates = []
    without = render_timeline(notes, [(ts[0], None)], dataset.cameras[0])
    assert with_lanes.height > without.height  # two more lanes
    colours = {c for _, c in with_lanes.getcolors(1 << 16)}
    assert {KIND_COLOURS[k] for k in ("grasp", "release", "rest")} <= colours

"""The report in two halves, one per rule: the images (``render_report``: timelines and
VQA overlays, from the staging files) and the summary (``summarize_run``: summary.html
and usage.csv, from the validation report and the metrics files)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from episcribe.atomic import write_text
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.report.draw import jpeg_bytes, png_bytes
from episcribe.report.notes import load_notes
from episcribe.report.overlays import PANEL_W, pick_vqa, render_vqa_sheet
from episcribe.report.summary import summary_html
from episcribe.report.timeline import render_timeline, strip_slices, strip_times, tile_size
from episcribe.report.usage import read_metrics, usage, usage_csv
from episcribe.report.video import Clip, panel_frames, strip_frames

log = logging.getLogger(__name__)

# Caps that bound the report's cost whatever the dataset's size (bench/README.md has what
# each image costs). Episodes are evenly spaced samples; the overlay episodes are a
# subset of the timeline episodes.
MAX_TIMELINES = 64
MAX_OVERLAY_EPISODES = 4
TIMELINE_EXT, OVERLAY_EXT = "png", "jpg"


def sample_episodes(episodes: Sequence[int], cap: int = MAX_TIMELINES) -> list[int]:
    """At most ``cap`` of ``episodes``, evenly spaced, the first and last included."""
    episodes = list(episodes)
    if len(episodes) <= cap:
        return episodes
    if cap <= 1:
        return episodes[:cap]
    return sorted({episodes[round(i * (len(episodes) - 1) / (cap - 1))] for i in range(cap)})


def timeline_name(index: int) -> str:
    return f"episode_{index:06d}.{TIMELINE_EXT}"


def overlay_name(index: int, camera: str) -> str:
    return f"episode_{index:06d}__{camera}.{OVERLAY_EXT}"


def render_episode(
    dataset: LeRobotDataset,
    staging_dir,
    index: int,
    modules: Sequence[str],
    camera: str,
    timelines_dir: Path,
    overlays_dir: Path | None,
    review_dir=None,
) -> dict:
    """Write one episode's timeline, and its overlays if ``overlays_dir``; what was written."""
    episode, notes = load_notes(dataset, staging_dir, index, modules, review_dir)
    centres = strip_times(notes, episode.timestamps)
    slices = strip_slices(notes, len(centres))
    videos = dataset.episode_info(index).videos
    strip: list = [(t, None) for t in centres]
    overlays = []
    frames = 0
    for cam in sorted(dataset.cameras, key=lambda c: c != camera):  # the strip's first
        items = [v for v in notes.vqa if v.camera == cam] if overlays_dir else []
        if cam != camera and not items:
            continue
        segment = videos.get(cam)
        if segment is None:
            log.warning("episode %06d has no video for camera %s", index, cam)
            continue
        with Clip(segment) as clip:
            if cam == camera and centres:
                size = tile_size(len(centres), segment.height / max(segment.width, 1))
                strip = strip_frames(clip, slices, centres, size)
            if items:
                chosen = pick_vqa(items, cheap=lambda v: clip.is_keyframe(v.t))
                scaled = (PANEL_W, round(segment.height * PANEL_W / max(segment.width, 1)))
                images = panel_frames(clip, [v.t for v in chosen], scaled)
                panels = list(zip(chosen, images, strict=True))
            frames += clip.grabs
        if items:
            sheet = render_vqa_sheet(notes, cam, panels, len(items), source_width=segment.width)
            (overlays_dir / overlay_name(index, cam)).write_bytes(jpeg_bytes(sheet))
            overlays.append(cam)
    timeline = render_timeline(notes, strip, camera, cameras=dataset.cameras)
    # Plain writes: these files live in the rule's directory() outputs, which snakemake
    # deletes whole when the job fails, so an fsync'd rename per image buys nothing.
    (timelines_dir / timeline_name(index)).write_bytes(png_bytes(timeline))
    return {"episode": index, "overlays": overlays, "keyframes": frames}


def report_episodes(
    episodes: Sequence[int],
    max_timelines: int = MAX_TIMELINES,
    max_overlay_episodes: int = MAX_OVERLAY_EPISODES,
) -> tuple[list[int], list[int]]:
    """The episodes that get a timeline, and those of them that get overlays.

    Both rules compute this from the plan's episodes, so the summary can name them
    without waiting for the images. Sampling is idempotent: passing the timeline
    episodes (instead of all) gives the same two lists.
    """
    shown = sample_episodes(episodes, max_timelines)
    return shown, sample_episodes(shown, max_overlay_episodes)


def render_images(
    *,
    dataset_root: str | os.PathLike,
    staging_dir: str | os.PathLike,
    episodes: Sequence[int],
    modules: Sequence[str],
    model: Mapping[str, Any],
    timelines_dir: str | os.PathLike,
    overlays_dir: str | os.PathLike,
    max_timelines: int = MAX_TIMELINES,
    max_overlay_episodes: int = MAX_OVERLAY_EPISODES,
    review_dir: str | os.PathLike | None = None,
) -> dict:
    """Timelines and VQA overlays from the staging files (the ``render_report`` rule), with
    the corrections in ``review_dir`` applied.

    ``episodes``: the plan's episodes, or already their sample (see report_episodes).
    Returns counts (also logged).
    """
    started, cpu = time.monotonic(), time.process_time()
    dataset = LeRobotDataset.open(dataset_root, episodes)
    camera = model.get("camera_key") or next(iter(dataset.cameras), None)  # None: depth only
    timelines_dir, overlays_dir = Path(timelines_dir), Path(overlays_dir)
    timelines_dir.mkdir(parents=True, exist_ok=True)
    overlays_dir.mkdir(parents=True, exist_ok=True)
    shown, overlaid = report_episodes(episodes, max_timelines, max_overlay_episodes)

    # One thread: the time goes to FreeType and Python, under the GIL (two threads ran
    # no faster), and the rule's single core leaves the other to validate_staging.
    done = [
        render_episode(
            dataset,
            staging_dir,
            index,
            modules,
            camera,
            timelines_dir,
            overlays_dir if index in overlaid else None,
            review_dir,
        )
        for index in shown
    ]
    result = {
        "timelines": len(done),
        "overlays": sum(len(d["overlays"]) for d in done),
        "keyframes": sum(d["keyframes"] for d in done),
        "seconds": round(time.monotonic() - started, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }
    log.info(
        "report images: %d timelines, %d overlay sheets, %d frames grabbed, %.1f s (%.1f CPU-s)",
        result["timelines"],
        result["overlays"],
        result["keyframes"],
        result["seconds"],
        result["cpu_seconds"],
    )
    return result


def summarize_run(
    *,
    dataset_name: str,
    episodes: Sequence[int],
    modules: Sequence[str],
    model: Mapping[str, Any],
    metrics_paths: Iterable[str | os.PathLike],
    validation_json: str | os.PathLike | None,
    summary_path: str | os.PathLike,
    usage_path: str | os.PathLike,
    max_timelines: int = MAX_TIMELINES,
    max_overlay_episodes: int = MAX_OVERLAY_EPISODES,
) -> dict:
    """summary.html and usage.csv (the ``summarize_run`` rule); returns counts (also logged).

    Reads neither the images nor the dataset: which episodes have images is computed as
    render_images computes it, and ``model["camera_key"]`` is shown as given.
    """
    started, cpu = time.monotonic(), time.process_time()
    shown, overlaid = report_episodes(episodes, max_timelines, max_overlay_episodes)
    validation = None
    if validation_json and Path(validation_json).is_file():
        validation = json.loads(Path(validation_json).read_text(encoding="utf-8"))
    rows = usage(read_metrics(metrics_paths), modules)
    write_text(usage_path, usage_csv(rows))
    write_text(
        summary_path,
        summary_html(
            dataset=dataset_name,
            episodes=episodes,
            shown=shown,
            overlaid=overlaid,
            modules=modules,
            model=model,
            validation=validation,
            usage_rows=rows,
            seconds=time.monotonic() - started,
        ),
    )
    result = {
        "calls": sum(r["calls"] for r in rows if r["kind"] == "all" and r["module"] != "total"),
        "seconds": round(time.monotonic() - started, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }
    log.info(
        "report summary: %d model calls summarised, %.1f s (%.1f CPU-s)",
        result["calls"],
        result["seconds"],
        result["cpu_seconds"],
    )
    return result


def build_report(
    *,
    dataset_root: str | os.PathLike,
    staging_dir: str | os.PathLike,
    episodes: Sequence[int],
    modules: Sequence[str],
    model: Mapping[str, Any],
    metrics_paths: Iterable[str | os.PathLike],
    validation_json: str | os.PathLike | None,
    timelines_dir: str | os.PathLike,
    overlays_dir: str | os.PathLike,
    summary_path: str | os.PathLike,
    usage_path: str | os.PathLike,
    dataset_name: str | None = None,
    max_timelines: int = MAX_TIMELINES,
    max_overlay_episodes: int = MAX_OVERLAY_EPISODES,
) -> dict:
    """The whole report in one process (tests, benchmarks): render_images, then
    summarize_run. The workflow runs the two as separate rules."""
    started, cpu = time.monotonic(), time.process_time()
    if not (model.get("camera_key") and dataset_name):
        dataset = LeRobotDataset.open(dataset_root, episodes)
        model = {
            **model,
            "camera_key": model.get("camera_key") or next(iter(dataset.cameras), None),
        }
        dataset_name = dataset_name or dataset.name
    caps = {"max_timelines": max_timelines, "max_overlay_episodes": max_overlay_episodes}
    images = render_images(
        dataset_root=dataset_root,
        staging_dir=staging_dir,
        episodes=episodes,
        modules=modules,
        model=model,
        timelines_dir=timelines_dir,
        overlays_dir=overlays_dir,
        **caps,
    )
    summary = summarize_run(
        dataset_name=dataset_name,
        episodes=episodes,
        modules=modules,
        model=model,
        metrics_paths=metrics_paths,
        validation_json=validation_json,
        summary_path=summary_path,
        usage_path=usage_path,
        **caps,
    )
    return {
        **images,
        "calls": summary["calls"],
        "seconds": round(time.monotonic() - started, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }

"""The whole report in one call: what the ``render_report`` rule runs."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_text
from ..dataset import LeRobotDataset
from .draw import jpeg_bytes, png_bytes
from .notes import load_notes
from .overlays import PANEL_W, pick_vqa, render_vqa_sheet
from .summary import summary_html
from .timeline import render_timeline, strip_slices, strip_times, tile_size
from .usage import read_metrics, usage, usage_csv
from .video import Clip, panel_frames, strip_frames

log = logging.getLogger(__name__)

# Measured on 32 x 20-s episodes, 320x240 video, GOP 2 s (one core): a timeline costs
# ~30 ms of CPU (two thirds of it FreeType drawing the text, then the PNG), an overlay
# episode ~45 ms (a sheet per camera); text is capped per image, so longer episodes cost
# little more. With these caps the images cost at most ~2.2 CPU-s; at 10,000 episodes
# the model usage (~500,000 call records) adds ~1.3 and the job start ~0.5: ~4 CPU-s.
# Episodes are evenly spaced samples; the overlay episodes are a subset of the timeline
# episodes.
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
) -> dict:
    """Write one episode's timeline, and its overlays if ``overlays_dir``; what was written."""
    episode, notes = load_notes(dataset, staging_dir, index, modules)
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
    # deletes whole when the job fails; an fsync'd rename per image cost ~3 ms each.
    (timelines_dir / timeline_name(index)).write_bytes(png_bytes(timeline))
    return {"episode": index, "overlays": overlays, "keyframes": frames}


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
    """Render every part of the report; returns counts (also logged)."""
    started, cpu = time.monotonic(), time.process_time()
    dataset = LeRobotDataset.open(dataset_root)
    camera = model.get("camera_key") or dataset.cameras[0]
    timelines_dir, overlays_dir = Path(timelines_dir), Path(overlays_dir)
    timelines_dir.mkdir(parents=True, exist_ok=True)
    overlays_dir.mkdir(parents=True, exist_ok=True)
    shown = sample_episodes(episodes, max_timelines)
    overlaid = set(sample_episodes(shown, max_overlay_episodes))

    def one(index: int) -> dict:
        return render_episode(
            dataset,
            staging_dir,
            index,
            modules,
            camera,
            timelines_dir,
            overlays_dir if index in overlaid else None,
        )

    # One thread: the time goes to FreeType and Python, under the GIL (two threads ran
    # no faster), and the rule's single core leaves the other to write_dataset.
    done = [one(index) for index in shown]

    validation = None
    if validation_json and Path(validation_json).is_file():
        validation = json.loads(Path(validation_json).read_text(encoding="utf-8"))
    rows = usage(read_metrics(metrics_paths), modules)
    write_text(usage_path, usage_csv(rows))
    seconds = time.monotonic() - started
    write_text(
        summary_path,
        summary_html(
            dataset=dataset_name or dataset.name,
            episodes=episodes,
            shown=shown,
            overlaid=sorted(overlaid),
            modules=modules,
            model={**model, "camera_key": camera},
            validation=validation,
            usage_rows=rows,
            seconds=seconds,
        ),
    )
    result = {
        "timelines": len(done),
        "overlays": sum(len(d["overlays"]) for d in done),
        "keyframes": sum(d["keyframes"] for d in done),
        "calls": sum(r["calls"] for r in rows if r["kind"] == "all" and r["module"] != "total"),
        "seconds": round(time.monotonic() - started, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }
    log.info(
        "report: %d timelines, %d overlay sheets, %d model calls summarised, %.1f s (%.1f CPU-s)",
        result["timelines"],
        result["overlays"],
        result["calls"],
        result["seconds"],
        result["cpu_seconds"],
    )
    return result

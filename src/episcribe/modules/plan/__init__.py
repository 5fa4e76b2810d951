"""The plan module: subtasks, plan, memory and task rephrasings (persistent rows).

``run.py`` annotates one episode (effective task, segment, optionally after describe, over
contact sheets; stitching, optional relabel, plan and memory rows); ``windows.py`` samples
the frames and splits an episode too long for one request into overlapping windows;
``stitching.py`` turns the model's spans into a gap-free cover; ``relabel.py`` is the
seeded relabel pass; ``grounding.py`` places subtask boundaries on the signals module's
keystates; ``config.schema.yaml`` holds the ``plan.*`` settings and the budgets of its
call kinds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from episcribe.modules.spec import ModuleSpec

if TYPE_CHECKING:  # frames imports PyAV and Pillow, which parsing the Snakefile must not pay
    from episcribe.lerobot.frames import SheetGrid

RELABEL_IMAGES = 3  # previous, current and next span, one sheet each
RELABEL_TILES = 5  # frames per relabel sheet, in one row


def sheet_grid(settings) -> SheetGrid:
    """The contact sheets of the describe, segment and derive_task calls."""
    from episcribe.lerobot.frames import SheetGrid

    return SheetGrid(
        int(settings["sheet_columns"]),
        int(settings["sheet_rows"]),
        int(settings["tile_width"]),
        int(settings["jpeg_quality"]),
    )


def relabel_grid(settings) -> SheetGrid:
    """One row of ``RELABEL_TILES`` tiles: a relabel call's sheet of one span."""
    from episcribe.lerobot.frames import SheetGrid

    return SheetGrid(RELABEL_TILES, 1, int(settings["tile_width"]), int(settings["jpeg_quality"]))


def images_per_request(settings) -> int:
    # The segment (or, with clips, the derive_task) call's sheets of max_video_frames.
    tiles = int(settings["sheet_columns"]) * int(settings["sheet_rows"])
    sheets = math.ceil(int(settings["max_video_frames"]) / tiles)
    return max(sheets, RELABEL_IMAGES if settings["relabel"] else 0)


def videos_per_request(settings) -> int:
    return int(bool(settings["use_video_url"]))


def largest_image(settings) -> tuple[int, int]:
    sizes = [sheet_grid(settings).largest()]
    if settings["relabel"]:
        sizes.append(relabel_grid(settings).largest())
    return max(sizes, key=lambda size: size[0] * size[1])


SPEC = ModuleSpec(
    name="plan",
    # 3: sheets of 5 x 4 tiles at 2 fps, the whole episode in one request, overlapping
    # windows, completed-event segmentation rules, no default cap, optional relabel.
    version=3,
    # Staging only: snap rows record boundaries moved onto keystates; the task row, the task
    # it worked under (the dataset's or one derived from the video), for the modules
    # downstream; model_segment rows, the model's spans before stitching (for eval).
    styles=frozenset({"subtask", "plan", "memory", "task_aug", "snap", "task", "model_segment"}),
    prompt_kinds=("describe", "segment", "relabel", "task_rephrasings", "derive_task", "memory"),
    section="plan",
    upstream=("signals",),
    # The latency-bound chain plan -> interjections -> plan_update runs first, deeper
    # stages before new plan shards, so each shard's chain completes early.
    priority=10,
    images_per_request=images_per_request,
    videos_per_request=videos_per_request,
    largest_image=largest_image,
)

"""The plan module: subtasks, plan, memory and task rephrasings (persistent rows).

``run.py`` annotates one episode (effective task, describe -> segment over contact sheets,
stitching, plan and memory rows); ``grounding.py`` places subtask boundaries on the
signals module's keystates; ``config.schema.yaml`` holds the ``plan.*`` settings and the
budgets of its five call kinds.
"""

import math

from episcribe.modules.spec import ModuleSpec

SHEET_TILES = 4  # frames per contact sheet (2 x 2)


def images_per_request(settings) -> int:
    return math.ceil(int(settings["max_video_frames"]) / SHEET_TILES)


def videos_per_request(settings) -> int:
    return int(bool(settings["use_video_url"]))


SPEC = ModuleSpec(
    name="plan",
    version=2,
    # Staging only: snap rows record boundaries moved onto keystates; the task row, the task
    # it worked under (the dataset's or one derived from the video), for the modules
    # downstream; model_segment rows, the model's spans before stitching (for eval).
    styles=frozenset({"subtask", "plan", "memory", "task_aug", "snap", "task", "model_segment"}),
    prompt_kinds=("describe", "segment", "task_rephrasings", "derive_task", "memory"),
    section="plan",
    upstream=("signals",),
    # The latency-bound chain plan -> interjections -> plan_update runs first, deeper
    # stages before new plan shards, so each shard's chain completes early.
    priority=10,
    images_per_request=images_per_request,
    videos_per_request=videos_per_request,
)

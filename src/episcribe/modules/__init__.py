"""Annotation modules: each is ``async def run_episode(ctx: EpisodeContext) -> list[dict]``.

- ``signals``: keystates (staging only) and motion rows from the robot's state (no model);
- ``plan``: task_aug, subtask, plan and memory rows (persistent);
- ``interjections``: the first acknowledgement and interjections with spoken replies (events);
- ``plan_update``: a refreshed plan at every interjection (persistent);
- ``vqa``: frame-grounded question/answer pairs per camera (events).

``DEPENDS_ON`` names the modules whose staging rows a module reads (``ctx.upstream``).
"""

from . import interjections, plan, plan_update, signals, vqa

RUNNERS = {
    "signals": signals.run_episode,
    "plan": plan.run_episode,
    "interjections": interjections.run_episode,
    "plan_update": plan_update.run_episode,
    "vqa": vqa.run_episode,
}

DEPENDS_ON: dict[str, list[str]] = {
    "signals": [],
    "plan": ["signals"],
    "interjections": ["plan"],
    "plan_update": ["plan", "interjections"],
    "vqa": [],
}

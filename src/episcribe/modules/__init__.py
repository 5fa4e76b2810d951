"""Annotation modules: each is ``async def run_episode(ctx: EpisodeContext) -> list[dict]``.

- ``signals``: keystates (staging only) and motion rows from the robot's state (no model);
- ``signals``: keystates (staging only) and motion rows from the robot's state (no model);
- ``plan``: task_aug, subtask, plan and memory rows (persistent);
- ``interjections``: the first acknowledgement and interjections with spoken replies (events);
- ``plan_update``: a refreshed plan at every interjection (persistent);
- ``vqa``: frame-grounded question/answer pairs per camera (events).

Each is declared in :mod:`episcribe.modules.registry` (styles, upstream modules, prompt kinds,
config section), which the rest of the package reads.
"""

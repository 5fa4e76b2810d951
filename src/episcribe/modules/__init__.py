"""Annotation modules, one folder each: the plugin contract.

A module folder holds

- ``__init__.py``: ``SPEC = ModuleSpec(...)`` (:mod:`.spec`): its name, the styles it
  writes, its prompt kinds, config section, upstream modules, seed use, priority, budgets
  per call kind and images per request. Pure data: read while Snakemake parses.
- ``config.schema.yaml``: its part of the config schema, the one place of its defaults.
- ``run.py``: ``async def run_episode(ctx: EpisodeContext) -> list[dict]`` (and any other
  code of its own: grounding, answer shapes, analysis).
- its prompts in the workflow's ``prompts/<name>/<kind>.txt`` + ``<kind>.schema.json``.

:mod:`.registry` finds the folders (and those named in ``EPISCRIBE_MODULES``); the config
schema, style routing, prompt inputs, request sizing and cache identity derive from it.
Shared by all modules: :mod:`.base` (the episode context and helpers) and :mod:`.prompts`.
Modules import ``lerobot``, ``vlm`` and the shared pieces, never ``pipeline``.

- ``signals``: keystates (staging only) and motion rows from the robot's state (no model);
- ``plan``: task_aug, subtask, plan and memory rows (persistent);
- ``interjections``: the first acknowledgement and interjections with spoken replies (events);
- ``plan_update``: a refreshed plan at every interjection (persistent);
- ``vqa``: frame-grounded question/answer pairs per camera (events).
"""

"""Every annotation module, declared once; the rest of the package derives from this.

A module is a name, the styles its rows may have, the modules whose staging rows it reads,
the prompt kinds it calls the model with (``prompts/<kind>.txt`` + ``.schema.json``: the
inputs of its jobs), the config section that switches it on and holds its settings, and
the code that annotates one episode (imported only when a job runs it: parsing the
Snakefile must not pay for frame decoding or the model client).

Pure data and the standard library only: ``staging``, ``language``, ``prompts`` and the
workflow plan all import it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    styles: frozenset[str | None]  # what its rows may be (None: a tool-call-only speech atom)
    runner: str  # "package.module:function", an async run_episode(ctx) -> rows
    prompt_kinds: tuple[str, ...]
    section: str  # config section: its `enabled` switch and (with settings) its knobs
    upstream: tuple[str, ...] = ()  # modules whose staging rows it reads
    settings: bool = True  # its section's settings shape its answers (params of its jobs)
    seeded: bool = False  # draws from the RNG seeded by (seed, episode, module)
    priority: int = 0  # higher runs first among ready jobs
    # (module, style): its rows of that style replace that module's at the same timestamp
    supersedes: tuple[str, str] | None = None

    def run_episode(self) -> Callable:
        path, _, name = self.runner.partition(":")
        return getattr(importlib.import_module(path), name)


# In pipeline order. The signals module (the robot's own state, no model) goes first: the
# plan module places its boundaries on its keystates. Priorities: then the latency-bound
# chain plan -> interjections -> plan_update (deeper stages before new plan shards, so
# each shard's chain completes early); the throughput-bound vqa jobs fill the slots left.
SPECS = (
    ModuleSpec(
        name="signals",
        # keystate rows stay in staging (language.STAGING_STYLES): the plan reads them
        styles=frozenset({"motion", "keystate"}),
        runner="episcribe.modules.signals:run_episode",
        prompt_kinds=(),
        section="signals",
        priority=40,  # no model calls, and the plan waits for it
    ),
    ModuleSpec(
        name="plan",
        # staging only: snap rows record boundaries moved onto keystates, model_segment
        # rows the model's spans before stitching
        styles=frozenset({"subtask", "plan", "memory", "task_aug", "snap", "model_segment"}),
        runner="episcribe.modules.plan:run_episode",
        prompt_kinds=("describe", "segment", "task_rephrasings", "derive_task", "memory"),
        section="plan",
        upstream=("signals",),
        priority=10,
    ),
    ModuleSpec(
        name="interjections",
        styles=frozenset({"interjection", None}),
        runner="episcribe.modules.interjections:run_episode",
        prompt_kinds=("initial_speech", "interjection"),
        section="interjections",
        upstream=("plan",),
        seeded=True,
        priority=20,
    ),
    ModuleSpec(
        name="plan_update",
        styles=frozenset({"plan"}),
        runner="episcribe.modules.plan_update:run_episode",
        prompt_kinds=("plan_refresh",),
        # Runs with interjections and reads no knob of its own: its inputs are the plan
        # and interjection rows, so it re-runs whenever they change.
        section="interjections",
        upstream=("plan", "interjections"),
        settings=False,
        priority=30,
        supersedes=("plan", "plan"),
    ),
    ModuleSpec(
        name="vqa",
        styles=frozenset({"vqa"}),
        runner="episcribe.modules.vqa:run_episode",
        prompt_kinds=("vqa_bbox", "vqa_keypoint", "vqa_count", "vqa_attribute", "vqa_spatial"),
        section="vqa",
        seeded=True,
    ),
)
MODULES: dict[str, ModuleSpec] = {spec.name: spec for spec in SPECS}
NAMES = tuple(MODULES)


def enabled(config: dict) -> list[str]:
    """The modules a config runs, in pipeline order."""
    return [spec.name for spec in SPECS if config[spec.section]["enabled"]]

"""What an annotation module declares about itself: :class:`ModuleSpec`.

Each module folder's ``__init__.py`` holds one ``SPEC``; beside it, ``config.schema.yaml``
(its settings and completion-token budgets, with their defaults) and ``run.py`` (its
``run_episode``). Pure data and the standard library only: the registry imports every
module's ``__init__`` while Snakemake parses the Snakefile, which must not pay for frame
decoding or the model client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


def no_media(settings: Mapping) -> int:
    return 0


def frames_only(settings: Mapping) -> tuple[int, int]:
    return 0, 0


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    # The behaviour version: part of the cache identity and of its jobs' params, so raising
    # it re-runs this module (and, through their inputs, the modules downstream) and
    # nothing else. Raise it whenever the module's code changes the rows it makes for the
    # same inputs; tests/test_module_versions.py fails until it is raised.
    version: int
    styles: frozenset[str | None]  # what its rows may be (None: a tool-call-only speech atom)
    prompt_kinds: tuple[str, ...]  # prompts/<name>/<kind>.txt + .schema.json
    section: str  # config section: its `enabled` switch and (with settings) its knobs
    upstream: tuple[str, ...] = ()  # modules whose staging rows it reads
    settings: bool = True  # its section's settings shape its answers (params of its jobs)
    seeded: bool = False  # draws from the RNG seeded by (seed, episode, module)
    priority: int = 0  # higher runs first among ready jobs
    # (module, style): its rows of that style replace that module's at the same timestamp
    supersedes: tuple[str, str] | None = None
    # modules whose event frames its own events keep off (LeRobot trains one event kind
    # per frame); their `placement` settings join its settings, so it re-runs with them
    avoids: tuple[str, ...] = ()
    placement: tuple[str, ...] = ()  # its settings that decide which frames its events hold
    # When an episode has its file, its rows replace every other module's rows of its
    # styles in that episode (the review module: a person's corrections of the episode).
    replaces_styles: bool = False
    # False: no annotate job runs it; its files come from elsewhere (the review server).
    annotates: bool = True
    # Call kinds that share one vlm.max_completion_tokens key (kind -> key); others: own key.
    budget_keys: Mapping[str, str] = field(default_factory=dict)
    # The most images / video clips one of its requests carries, from its settings
    # (the serve command's --limit-mm-per-prompt and --max-model-len).
    images_per_request: Callable[[Mapping], int] = no_media
    videos_per_request: Callable[[Mapping], int] = no_media
    # The largest image (width, height) it sends that is not bounded by vlm.image_max_side
    # (the plan module's contact sheets, sized by their own settings); (0, 0): none.
    largest_image: Callable[[Mapping], tuple[int, int]] = frames_only
    runner: str = "run:run_episode"  # "<file>:<function>" in the folder, imported when run
    # Set by the registry: the importable package and the folder it was read from.
    package: str = ""
    folder: Path = Path()

    def budget_key(self, kind: str) -> str:
        return self.budget_keys.get(kind, kind)

    @property
    def schema_path(self) -> Path:
        return self.folder / "config.schema.yaml"

"""Every annotation module, read from its folder; the rest of the package derives from this.

A module is a folder under ``episcribe/modules/`` (or one named in the ``EPISCRIBE_MODULES``
environment variable, ``os.pathsep``-separated, for modules kept outside the package)
holding an ``__init__.py`` with its :class:`~episcribe.modules.spec.ModuleSpec`, a
``config.schema.yaml`` with its settings and budgets, and its code. Its prompts live in the
workflow's ``prompts/<name>/``. From the specs come the config schema
(:func:`config_schema`), the styles each module may write, the prompt files of its jobs,
the run's request sizes for the model server (:func:`server_settings`), the merge rules
(``supersedes``, ``replaces_styles``), seeds and job priorities. A module that no job runs
(``annotates=False``: ``review``, whose files the review server writes) is in ``MODULES``
and ``SPECS`` but not in ``NAMES`` or :func:`enabled`.

Modules are listed in pipeline order: upstream modules before the modules that read them,
otherwise by name.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cache
from pathlib import Path

import yaml

from episcribe import WORKFLOW_DIR
from episcribe.modules.spec import ModuleSpec

BUILTIN_DIR = Path(__file__).resolve().parent
EXTRA_MODULES_ENV = "EPISCRIBE_MODULES"
BASE_SCHEMA = WORKFLOW_DIR / "schemas" / "config.schema.yaml"


def _builtin() -> list[ModuleSpec]:
    specs = []
    for folder in sorted(BUILTIN_DIR.iterdir()):
        if (folder / "__init__.py").is_file() and (folder / "config.schema.yaml").is_file():
            package = f"{__package__}.{folder.name}"
            specs.append(_read(importlib.import_module(package), package, folder))
    return specs


def _extra() -> list[ModuleSpec]:
    specs = []
    for entry in filter(None, os.environ.get(EXTRA_MODULES_ENV, "").split(os.pathsep)):
        folder = Path(entry).resolve()
        package = f"episcribe_module_{folder.name}"
        if package not in sys.modules:
            found = importlib.util.spec_from_file_location(
                package, folder / "__init__.py", submodule_search_locations=[str(folder)]
            )
            if found is None or not (folder / "__init__.py").is_file():
                raise ImportError(f"{EXTRA_MODULES_ENV}: {folder} has no __init__.py")
            module = importlib.util.module_from_spec(found)
            sys.modules[package] = module
            found.loader.exec_module(module)
        specs.append(_read(sys.modules[package], package, folder))
    return specs


def _read(module, package: str, folder: Path) -> ModuleSpec:
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, ModuleSpec):
        raise ImportError(f"module folder {folder} declares no SPEC = ModuleSpec(...)")
    return replace(spec, package=package, folder=folder)


def _pipeline_order(specs: list[ModuleSpec]) -> tuple[ModuleSpec, ...]:
    by_name = {spec.name: spec for spec in specs}
    if len(by_name) != len(specs):
        raise ImportError("two module folders declare the same module name")
    ordered: list[ModuleSpec] = []
    done: set[str] = set()
    while len(ordered) < len(specs):
        ready = sorted(
            name
            for name, spec in by_name.items()
            if name not in done and all(up in done or up not in by_name for up in spec.upstream)
        )
        if not ready:
            raise ImportError("the modules' upstream declarations form a cycle")
        ordered.append(by_name[ready[0]])
        done.add(ready[0])
    return tuple(ordered)


SPECS: tuple[ModuleSpec, ...] = _pipeline_order(_builtin() + _extra())
MODULES: dict[str, ModuleSpec] = {spec.name: spec for spec in SPECS}
# The modules annotate jobs run (each has staging files); not the review module.
NAMES = tuple(spec.name for spec in SPECS if spec.annotates)


def enabled(config: Mapping) -> list[str]:
    """The modules a config runs (annotate jobs), in pipeline order."""
    return [spec.name for spec in SPECS if spec.annotates and config[spec.section]["enabled"]]


def run_episode(module: str) -> Callable:
    """The module's ``async run_episode(ctx) -> rows`` (imports its code)."""
    spec = MODULES[module]
    path, _, name = spec.runner.partition(":")
    return getattr(importlib.import_module(f"{spec.package}.{path}"), name)


def asks_model(module: str) -> bool:
    """Whether the module calls the model at all (``signals`` does not)."""
    return bool(MODULES[module].prompt_kinds)


@cache
def config_schema() -> dict:
    """schemas/config.schema.yaml with every module folder's config.schema.yaml merged in."""
    schema = _load_yaml(BASE_SCHEMA)
    for spec in SPECS:
        if spec.schema_path.is_file():
            _merge(schema, _load_yaml(spec.schema_path), str(spec.schema_path))
    return schema


def _load_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _merge(into: dict, part: dict, where: str) -> None:
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, where)
        elif key in into and into[key] != value:
            raise ImportError(f"{where}: {key!r} is already declared differently")
        else:
            into[key] = copy.deepcopy(value)


def max_images(config: Mapping) -> int:
    """The most images one request of this config carries (``--limit-mm-per-prompt``)."""
    return max(
        [0] + [MODULES[m].images_per_request(config[MODULES[m].section]) for m in enabled(config)]
    )


def max_videos(config: Mapping) -> int:
    return max(
        [0] + [MODULES[m].videos_per_request(config[MODULES[m].section]) for m in enabled(config)]
    )


def largest_image(config: Mapping) -> tuple[int, int]:
    """The largest image (by pixels) a request of this config carries beyond the frames
    bounded by vlm.image_max_side; (0, 0) if none."""
    sizes = [MODULES[m].largest_image(config[MODULES[m].section]) for m in enabled(config)]
    return max([(0, 0), *sizes], key=lambda size: size[0] * size[1])


def server_settings(config: Mapping) -> dict:
    """The vlm section plus what sizing the server needs from the modules' settings."""
    return {
        **config["vlm"],
        "max_images": max_images(config),
        "max_videos": max_videos(config),
        "max_image_size": list(largest_image(config)),
    }


def call_budgets(module: str, vlm: Mapping) -> dict[str, int]:
    """Completion budget per call kind of the module, from vlm.max_completion_tokens (the
    client adds room to think)."""
    spec = MODULES[module]
    budgets = vlm["max_completion_tokens"]
    return {kind: budgets[spec.budget_key(kind)] for kind in spec.prompt_kinds}

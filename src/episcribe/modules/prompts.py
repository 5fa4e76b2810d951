"""Prompt templates and answer schemas: ``prompts/<module>/<kind>.txt`` + ``<kind>.schema.json``.

One plain-text template per VLM call kind, with ``str.format`` placeholders (``{task}``);
literal braces are doubled (``{{``). Jinja is avoided on purpose: editors and diffs show
the raw text that is sent. Lines starting with ``#`` at the very top of a template are
notes for whoever edits it (what the call is for, which placeholders exist) and are not
sent to the model.

A line that is exactly ``---`` splits a template in two: the text above it is the call's
instructions, sent first as a system message, the text below it the request, sent in the
user turn after the images. Instructions that are the same for every call of a kind (no
placeholder whose value changes per call) are then a prompt prefix the server's prefix
cache computes once per run. A template without the line is all request: its images come
first in the request (the plan calls over the same frames share that prefix instead).

Beside each template, ``<kind>.schema.json`` is the JSON Schema (draft 2020-12) of the
answer: sent to the server as a structured-output constraint and checked on receipt.

Prompts are read only from the directory the workflow passes in (no environment-variable
override), so the files a Snakemake rule declares as inputs (:func:`prompt_files`) are
exactly the files the job reads, and editing one re-runs exactly its module's jobs.
"""

from __future__ import annotations

import copy
import json
import string
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema

from episcribe.errors import UserError
from episcribe.modules import registry

SPLIT_LINE = "---"

# The call kinds each module makes, and the module (prompts/<module>/) of each kind.
MODULE_PROMPT_KINDS: dict[str, tuple[str, ...]] = {
    spec.name: spec.prompt_kinds for spec in registry.SPECS
}
# Call kinds of ``episcribe eval`` (no module's: no run's job reads them): prompts/eval/.
EVAL_PROMPT_KINDS = ("judge", "label_segment")
KIND_FOLDER = {
    **{kind: module for module, kinds in MODULE_PROMPT_KINDS.items() for kind in kinds},
    **{kind: "eval" for kind in EVAL_PROMPT_KINDS},
}


@dataclass(frozen=True)
class Prompt:
    """One call kind: its template text (editor notes removed) and its answer schema."""

    kind: str
    template: str
    schema: dict
    path: Path | None = None

    @cached_property
    def fields(self) -> list[str]:
        """The placeholders the template uses, in order of first use (parsed once)."""
        return _fields(self.template, self._where)

    @property
    def _where(self) -> str:
        return str(self.path) if self.path else f"the {self.kind!r} prompt"

    def render(self, **fields: Any) -> str:
        """The whole template with ``fields`` filled in (instructions, then request)."""
        return "\n".join(part for part in self.render_parts(**fields) if part)

    def render_parts(self, **fields: Any) -> tuple[str, str]:
        """(instructions, request) with ``fields`` filled in; extra fields are ignored.

        A placeholder the caller does not provide raises UserError naming the file and key.
        """
        missing = [name for name in self.fields if name not in fields]
        if missing:
            raise UserError(
                f"{self._where} uses the placeholder {{{missing[0]}}}, which the {self.kind} "
                f"call does not provide; available: {', '.join(sorted(fields)) or 'none'} "
                "(write literal braces as {{ and }})"
            )
        lines = self.template.splitlines(keepends=True)
        cut = next((i for i, line in enumerate(lines) if line.strip() == SPLIT_LINE), None)
        if cut is None:
            return "", self.template.format(**fields).strip()
        instructions = "".join(lines[:cut]).format(**fields).strip()
        return instructions, "".join(lines[cut + 1 :]).format(**fields).strip()

    def schema_with_items(self, key: str, min_items: int, max_items: int) -> dict:
        """A copy of the schema with minItems/maxItems set on the top-level array ``key``.

        Used to ask for exactly n rephrasings or at most n subtasks; servers with structured
        outputs enforce the bounds while decoding.
        """
        schema = copy.deepcopy(self.schema)
        node = schema.get("properties", {}).get(key)
        if not isinstance(node, dict) or node.get("type") != "array":
            raise UserError(f"{self._where}: the answer schema has no top-level array {key!r}")
        node["minItems"] = min_items
        node["maxItems"] = max_items
        return schema


def _fields(template: str, where: str) -> list[str]:
    names: list[str] = []
    try:
        for _, name, _, _ in string.Formatter().parse(template):
            if name is None:
                continue
            if name == "" or name.isdigit():
                raise UserError(
                    f"{where} has a positional placeholder {{{name}}}; use named placeholders "
                    "like {task}, and write literal braces as {{ and }}"
                )
            base = name.split(".")[0].split("[")[0]
            if not base.isidentifier():
                raise UserError(
                    f"{where} has {{{name}...}}, which is not a placeholder name: write literal "
                    "braces (e.g. in a JSON example) as {{ and }}"
                )
            if base not in names:
                names.append(base)
    except ValueError as exc:
        raise UserError(
            f"{where} is not a valid template ({exc}); write literal braces as {{{{ and }}}}"
        ) from None
    return names


def strip_notes(text: str) -> str:
    """The template without its leading ``#`` note lines."""
    lines = text.splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].lstrip().startswith("#"):
        start += 1
    return "".join(lines[start:])


class PromptSet:
    """The prompts of one prompts directory (``<dir>/<module>/<kind>.txt``; a kind no module
    declares: ``<dir>/<kind>.txt``), loaded lazily and cached."""

    def __init__(self, prompts_dir: str | Path):
        self.dir = Path(prompts_dir)
        self._cache: dict[str, Prompt] = {}

    def get(self, kind: str) -> Prompt:
        prompt = self._cache.get(kind)
        if prompt is None:
            prompt = self._cache[kind] = self._load(kind)
        return prompt

    def _load(self, kind: str) -> Prompt:
        folder = self.dir / KIND_FOLDER[kind] if kind in KIND_FOLDER else self.dir
        txt, schema_path = template_path(folder, kind), schema_path_for(folder, kind)
        for path in (txt, schema_path):
            if not path.is_file():
                raise UserError(
                    f"prompt file {path} is missing: every call kind needs {kind}.txt and "
                    f"{kind}.schema.json in {folder} (restore it from the repository's prompts/)"
                )
        template = strip_notes(txt.read_text(encoding="utf-8"))
        if not template.strip():
            raise UserError(f"{txt} is empty (only notes); write the prompt text")
        _fields(template, str(txt))  # fail now on a malformed template, naming the file
        try:
            schema = json.loads(schema_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{schema_path} is not valid JSON: {exc.msg} at line {exc.lineno}"
            ) from None
        if not isinstance(schema, dict):
            raise UserError(f"{schema_path} must hold a JSON Schema object")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise UserError(f"{schema_path} is not a valid JSON Schema: {exc.message}") from None
        return Prompt(kind, template, schema, txt)


def template_path(prompts_dir: str | Path, kind: str) -> Path:
    return Path(prompts_dir) / f"{kind}.txt"


def schema_path_for(prompts_dir: str | Path, kind: str) -> Path:
    return Path(prompts_dir) / f"{kind}.schema.json"


def prompts_root(prompt_file: str | Path) -> Path:
    """The prompts directory a module's prompt file lies in (``<dir>/<module>/<kind>.txt``)."""
    return Path(prompt_file).parents[1]


def prompt_files(prompts_dir: str | Path, module: str) -> list[Path]:
    """Every template and schema file ``module`` reads (in ``prompts_dir/<module>/``): its
    Snakemake rule's prompt inputs."""
    if module not in MODULE_PROMPT_KINDS:
        raise ValueError(
            f"unknown module {module!r}; expected one of {', '.join(MODULE_PROMPT_KINDS)}"
        )
    files: list[Path] = []
    for kind in MODULE_PROMPT_KINDS[module]:
        folder = Path(prompts_dir) / module
        files += [template_path(folder, kind), schema_path_for(folder, kind)]
    return files

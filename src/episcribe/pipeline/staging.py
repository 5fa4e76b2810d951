"""Staging: one JSONL file per (episode, module), between the model and the dataset.

Path grammar: ``<staging>/episode_{N:06d}/<module>.jsonl``.

Why JSONL: one row per line with sorted keys and a deterministic row order means
two runs that produce the same annotations produce byte-identical files, and a
prompt iteration shows up as a readable ``diff`` of exactly the rows that
changed. It is also what each per-episode Snakemake job declares as its output,
and it is easy to read or hand-edit while debugging. Files are written
atomically (temporary sibling, then rename), so a killed job never leaves half
a file that a later run would take as finished.

From staging to the dataset (``merge_modules``, the one place of this rule): an
episode's rows as written are the union of its modules' files, except that a ``plan``
row of ``plan_update`` (the plan refreshed at an interjection) supersedes the ``plan``
module's ``plan`` row at the same float32 timestamp. LeRobot resolves the plan active
at t as *the* latest ``plan`` row at or before t, and two rows at one timestamp make it
raise, so the written dataset has one ``plan`` row per timestamp. Both files keep their
rows, so a diff of either still shows what its module said.

A person's corrections (the ``review`` module, ``replaces_styles``) go further: an episode
with a review file (``<results>/review/episode_{N:06d}.jsonl``, written by the review
server, never by a job) takes its rows of the styles a person can correct from that file
alone, and every other module's rows of those styles (plan_update's included) are left
out. The file holds the episode's whole set of those rows, so deleting a VQA pair in the
review is a deletion in the dataset. Review rows of a style no enabled module writes are
ignored (``read_review``): disabling a module still removes its styles.

Staging-only rows (``language.STAGING_STYLES``) never reach the dataset: the ``signals``
module's ``keystate`` rows (one per keystate, at its frame; content
``{"arm", "kind", "part"}``) are what the plan module reads to place its boundaries, and
the plan module's ``snap`` rows (content ``{"from", "keystate"}``, at the boundary's new
time) record each subtask boundary it moved onto a keystate; its ``model_segment`` rows
(content ``{"start", "end", "instruction"}``) keep the spans the model gave before
stitching. Keeping them as rows keeps
one file per module and episode, cached and diffed like the rest; ``merge_modules``
leaves them out, so the validator's resolver checks and the writer never see them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from episcribe.atomic import atomic_path
from episcribe.errors import UserError
from episcribe.lerobot.language import ROW_KEYS, STAGING_STYLES, column_for_style, float32_or_none
from episcribe.modules import registry

MODULES = registry.NAMES


def staging_file(staging_dir: str | os.PathLike, episode: int, module: str) -> Path:
    """``staging_dir/episode_{N:06d}/{module}.jsonl``; ``ValueError`` for an unknown module."""
    return Path(staging_paths(staging_dir, [episode], module)[0])


def staging_paths(
    staging_dir: str | os.PathLike, episodes: Iterable[int], module: str
) -> list[str]:
    """``staging_dir/episode_{N:06d}/{module}.jsonl`` for each episode, as plain strings.

    The one place of the staging path grammar. Strings, not ``Path``: the Snakefile lists
    40,000 of these at 10,000 episodes, several times over, and building each through
    ``pathlib`` cost seconds of every ``snakemake`` start. ``pathlib`` normalises the
    directory once, then each path is one format.
    """
    if module not in MODULES:
        raise ValueError(f"unknown module {module!r}; expected one of {', '.join(MODULES)}")
    base = str(Path(staging_dir) / "episode_")
    tail = f"/{module}.jsonl"
    paths = []
    for episode in episodes:
        episode = int(episode)
        if episode < 0:
            raise ValueError(f"episode index must be >= 0, got {episode}")
        paths.append(f"{base}{episode:06d}{tail}")
    return paths


def review_file(review_dir: str | os.PathLike, episode: int) -> Path:
    """``review_dir/episode_{N:06d}.jsonl``: one reviewed episode's rows."""
    return Path(review_dir) / f"episode_{int(episode):06d}.jsonl"


def reviewed_episodes(review_dir: str | os.PathLike) -> list[int]:
    """The episodes that have a review file, from one listing of the directory."""
    names = os.listdir(review_dir) if os.path.isdir(review_dir) else []
    return sorted(
        int(name[8:-6])
        for name in names
        if name.startswith("episode_") and name.endswith(".jsonl") and name[8:-6].isdigit()
    )


def read_review(
    review_dir: str | os.PathLike | None, episode: int, modules: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """``{"review": rows}`` when the episode has a review file, else ``{}``; only rows of the
    styles ``modules`` write (``review_dir`` None: reviews are off)."""
    if review_dir is None:
        return {}
    path = review_file(review_dir, episode)
    if not path.is_file():
        return {}
    styles = {s for m in modules for s in registry.MODULES[m].styles}
    return {"review": [r for r in read_rows(path) if r.get("style") in styles]}


def staging_dir_of(path: str | os.PathLike) -> Path:
    """The staging directory a staging file lies in (the inverse of ``staging_paths``)."""
    return Path(path).parents[1]


def _order_key(row: Mapping[str, Any]) -> tuple:
    """Rows by time, then column (events before persistent), then (style, role, camera).

    This matches ``persistent_sort_key``/``event_sort_key`` but also gives rows with
    unknown styles or odd values a deterministic place (validation reports those).
    """
    try:
        column = column_for_style(row.get("style"))
    except (ValueError, TypeError):
        column = "~unknown"
    ts = row.get("timestamp")
    ts_key = float(ts) if isinstance(ts, int | float) else float("inf")
    rest = tuple(
        (0, "") if row.get(k) is None else (1, str(row.get(k))) for k in ("style", "role", "camera")
    )
    return (ts_key, column, *rest)


def dumps_row(row: Mapping[str, Any]) -> str:
    """One row as its JSONL line (no newline)."""
    return json.dumps(dict(row), sort_keys=True, ensure_ascii=False)


def write_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``rows`` atomically, one sorted-key JSON object per line, in a fixed order."""
    keyed = sorted((_order_key(r), dumps_row(r)) for r in rows)
    lines = [line for _, line in keyed]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a staging file; a malformed line raises ``UserError`` naming file and line."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                    "fix or delete the file and re-run its module"
                ) from None
            if not isinstance(row, dict):
                raise UserError(
                    f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}"
                )
            missing = [k for k in ROW_KEYS if k not in row]
            if missing:
                raise UserError(f"{path}:{lineno}: row lacks key(s) {', '.join(missing)}")
            rows.append(row)
    return rows


def written_rows(
    staging_dir: str | os.PathLike,
    episode: int,
    modules: Iterable[str],
    review_dir: str | os.PathLike | None = None,
) -> list[tuple[str, Mapping[str, Any]]]:
    """An episode's rows as the dataset gets them: every module's staging file (and a
    person's review, when ``review_dir`` is given) through :func:`merge_modules`."""
    rows_by_module: dict[str, list[dict]] = read_review(review_dir, episode, modules)
    for module in modules:
        path = staging_file(staging_dir, episode, module)
        if not path.is_file():
            raise UserError(
                f"episode {episode}: no staging file {path} for module {module!r}; "
                "nothing was written. Run the workflow again to annotate it"
            )
        rows_by_module[module] = read_rows(path)
    return merge_modules(rows_by_module)


def rows_from(
    staging_dir: str | os.PathLike,
    modules: Iterable[str],
    review_dir: str | os.PathLike | None = None,
) -> Callable[[int], list[tuple[str, Mapping[str, Any]]]]:
    """:func:`written_rows` of these staging files, for any episode (the writer's input)."""
    modules = list(modules)
    return lambda episode: written_rows(staging_dir, episode, modules, review_dir)


def merge_modules(
    rows_by_module: Mapping[str, Iterable[Mapping[str, Any]]],
) -> list[tuple[str, Mapping[str, Any]]]:
    """An episode's rows as the dataset gets them, each with the module it comes from.

    Applies each module's ``replaces_styles`` and ``supersedes`` (``registry``; see the
    module docstring) and leaves out staging-only rows; rows are otherwise kept as they
    are, malformed ones included (validation reports those).
    """
    rows_by_module = {m: list(rows) for m, rows in rows_by_module.items()}
    for spec in registry.SPECS:
        if spec.replaces_styles and spec.name in rows_by_module:
            rows_by_module = {
                m: rows
                if m == spec.name
                else [
                    r
                    for r in rows
                    if not (isinstance(r, Mapping) and r.get("style") in spec.styles)
                ]
                for m, rows in rows_by_module.items()
            }
    superseded: dict[str, tuple[str, set[float]]] = {}
    for module, (target, style) in (
        (spec.name, spec.supersedes) for spec in registry.SPECS if spec.supersedes
    ):
        times = {
            float32_or_none(r.get("timestamp"))
            for r in rows_by_module.get(module, ())
            if isinstance(r, Mapping) and r.get("style") == style
        }
        superseded[target] = (style, times - {None})
    merged = []
    for module, rows in rows_by_module.items():
        style, times = superseded.get(module, (None, set()))
        for row in rows:
            if isinstance(row, Mapping) and row.get("style") in STAGING_STYLES:
                continue
            if (
                times
                and isinstance(row, Mapping)
                and row.get("style") == style
                and float32_or_none(row.get("timestamp")) in times
            ):
                continue
            merged.append((module, row))
    return merged

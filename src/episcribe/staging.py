"""Staging: one JSONL file per (episode, module), between the model and the dataset.

Path grammar: ``<staging>/episode_{N:06d}/<module>.jsonl``.

Why JSONL: one row per line with sorted keys and a deterministic row order means
two runs that produce the same annotations produce byte-identical files, and a
prompt iteration shows up as a readable ``diff`` of exactly the rows that
changed. It is also what each per-episode Snakemake job declares as its output,
and it is easy to read or hand-edit while debugging. Files are written
atomically (temporary sibling, then rename), so a killed job never leaves half
a file that a later run would take as finished.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .atomic import atomic_path
from .errors import UserError
from .language import ROW_KEYS, column_for_style

MODULES = ("plan", "interjections", "plan_update", "vqa")


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

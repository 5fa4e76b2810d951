"""Write the staged annotations into the dataset as two language columns.

Steps of ``write_annotated``:
1. Read every staging file of the annotated episodes and build each episode's
   persistent slice (sorted) and its events grouped by float32 frame timestamp,
   cast to the explicit Arrow types of ``language.py``. Anything that cannot be
   written (an unknown style, a value of the wrong type) raises ``UserError``
   here, before a single file is touched.
2. New destination: create it, mark it as ours, hard-link (or copy, across
   filesystems) every source file except the data shards and ``meta/info.json``.
3. Rewrite each data shard, one shard in memory at a time: drop ``subtask_index``,
   ``tools`` and any previous language columns, append ``language_persistent``
   (the episode's whole slice on every frame) and ``language_events`` (only the
   rows whose timestamp equals the frame's, as float32; ``[]`` elsewhere), and
   write one row group per episode. Every other column keeps its values. An episode
   that is not annotated in this run (``dataset.only_episodes``) keeps exactly the
   language rows the source has for it, or none.
4. Write ``meta/episcribe.json``: what produced the annotations (a file LeRobot does not
   read), so a dataset made with the fake server says so; and ``meta/info.json`` with
   the two features and the ``say`` tool (user tools kept).

Steps 3 and 4 write pending siblings only; then one short phase renames them all,
``meta/info.json`` last (:mod:`episcribe.lerobot.file_commit`), so a reader sees the dataset
mixed only for the milliseconds of the renames, and a write killed during them is
finished by the next one. Before step 2 what a killed earlier write left in the
destination is finished (or its unfinished files removed), so none outlives the run
that resumes it.

Invariants: the source is never modified (in a new root, links are only ever
replaced by renames, never written through); every file is written to a
temporary sibling and renamed, so a crash leaves each file old or new, never half.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from episcribe import __version__
from episcribe.atomic import atomic_path, remove_stale_temporaries, write_json
from episcribe.errors import DatasetError, UserError
from episcribe.lerobot.file_commit import FileCommit, finish_interrupted
from episcribe.lerobot.language import (
    EVENT_COLUMN,
    EVENTS,
    LANGUAGE_COLUMNS,
    LANGUAGE_FEATURE,
    PERSISTENT,
    PERSISTENT_COLUMN,
    SAY_TOOL,
    column_array,
    column_for_style,
    event_sort_key,
    persistent_sort_key,
    to_arrow_row,
)

log = logging.getLogger(__name__)

# episode -> its rows as written, each with the module it comes from
EpisodeRows = Callable[[int], Iterable[tuple[str, Mapping[str, Any]]]]

MARKER = ".episcribe-output.json"  # marks a directory this writer created
PROVENANCE = "meta/episcribe.json"  # what produced the annotations; LeRobot ignores it
DROPPED_COLUMNS = ("subtask_index", "tools")


class _EpisodeRows:
    """One episode's rows, ready for the shards."""

    def __init__(self) -> None:
        self.persistent: list[dict] = []
        self.events: dict[float, list[dict]] = defaultdict(list)
        self.persistent_array: pa.Array | None = None  # length-1 array: the slice

    def n_events(self) -> int:
        return sum(len(v) for v in self.events.values())


def _prepare(rows_of: EpisodeRows, episodes: Iterable[int]) -> dict:
    prepared: dict[int, _EpisodeRows] = {}
    for episode in episodes:
        ep = prepared[int(episode)] = _EpisodeRows()
        persistent: list[dict] = []
        events: list[dict] = []
        for module, row in rows_of(episode):
            try:
                column = column_for_style(row.get("style"))
            except (ValueError, TypeError) as exc:
                raise UserError(
                    f"episode {episode}, module {module}: {exc}; nothing was written"
                ) from None
            (persistent if column == PERSISTENT else events).append(row)
        try:
            persistent.sort(key=persistent_sort_key)
            ep.persistent = [to_arrow_row(r, PERSISTENT) for r in persistent]
            ep.persistent_array = column_array([ep.persistent], PERSISTENT)
            for row in sorted(events, key=event_sort_key):
                ep.events[float(np.float32(row["timestamp"]))].append(to_arrow_row(row, EVENTS))
            column_array(list(ep.events.values()), EVENTS)  # type check before writing
        except (TypeError, ValueError, KeyError, pa.ArrowException) as exc:
            raise UserError(
                f"episode {episode}: staged rows cannot be written as the language columns "
                f"({type(exc).__name__}: {exc}); run validation to locate them. Nothing was written"
            ) from None
    return prepared


def _check_destination(source: Path, dest: Path) -> None:
    if dest == source:
        raise UserError(
            f"output directory {dest} is the source dataset; set output.in_place: true to "
            "rewrite the source, or choose another output.root"
        )
    if dest.is_relative_to(source):
        raise UserError(f"output directory {dest} is inside the source dataset {source}")
    if source.is_relative_to(dest):
        raise UserError(f"output directory {dest} contains the source dataset {source}")
    if dest.exists():
        if not dest.is_dir():
            raise UserError(f"output path {dest} exists and is not a directory")
        if any(dest.iterdir()) and not (dest / MARKER).is_file():
            raise UserError(
                f"output directory {dest} is not empty and was not written by episcribe; "
                "choose an empty or new directory"
            )


def _link_or_copy(src: Path, dst: Path) -> str:
    """Place ``src`` at ``dst`` via a hard link (copy across filesystems), atomically."""
    if dst.exists() and os.path.samefile(src, dst):
        return "linked"
    how = "linked"
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
            how = "copied"
    return how


def _hf_metadata(schema: pa.Schema, dropped: list[str]) -> dict | None:
    """Keep a Hugging Face ``datasets`` features block in step with the new columns."""
    meta = dict(schema.metadata or {})
    if b"huggingface" not in meta:
        return None
    try:
        hf = json.loads(meta[b"huggingface"])
        features = hf["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return None
    for name in dropped:
        features.pop(name, None)
    value = {"dtype": "string", "_type": "Value"}
    fields = {"role": value, "content": value, "style": value}
    tool_calls = {"_type": "List", "feature": value}
    features[PERSISTENT] = {
        "_type": "List",
        "feature": {
            **fields,
            "timestamp": {"dtype": "float32", "_type": "Value"},
            "camera": value,
            "tool_calls": tool_calls,
        },
    }
    features[EVENTS] = {
        "_type": "List",
        "feature": {**fields, "camera": value, "tool_calls": tool_calls},
    }
    meta[b"huggingface"] = json.dumps(hf).encode()
    return meta


def _episode_runs(episode_index: np.ndarray) -> list[tuple[int, int, int]]:
    """(episode, start, stop) for each contiguous run of frames."""
    if len(episode_index) == 0:
        return []
    cuts = np.flatnonzero(np.diff(episode_index)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(episode_index)]])
    return [(int(episode_index[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def _count(lists: pa.Array | pa.ChunkedArray) -> int:
    """Rows in a language column (lists of rows)."""
    return pc.sum(pc.list_value_length(lists)).as_py() or 0


def _kept_columns(table: pa.Table, src: Path) -> dict[str, pa.ChunkedArray]:
    """The shard's existing language columns, as our types (rows of the episodes this run
    does not annotate are kept as they are)."""
    kept = {}
    for name, column_type in ((PERSISTENT, PERSISTENT_COLUMN), (EVENTS, EVENT_COLUMN)):
        if name not in table.column_names:
            continue
        try:
            kept[name] = table.column(name).cast(column_type)
        except (pa.ArrowException, ValueError) as exc:
            raise UserError(
                f"data shard {src} has a {name} column that is not LeRobot's type ({exc}); "
                "its rows for episodes outside dataset.only_episodes cannot be kept. Annotate "
                "every episode, or write from a copy without that column"
            ) from None
    return kept


def _rewrite_shard(src: Path, dst: Path, prepared: dict[int, _EpisodeRows], stats: dict) -> None:
    try:
        with pq.ParquetFile(src) as pf:
            codec = "snappy"
            if pf.metadata.num_row_groups and pf.metadata.num_columns:
                codec = pf.metadata.row_group(0).column(0).compression.lower()
                codec = "none" if codec == "uncompressed" else codec
            table = pf.read()
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"cannot read data shard {src}: {exc}") from None
    for name in ("episode_index", "timestamp"):
        if name not in table.column_names:
            raise UserError(f"data shard {src} has no {name!r} column")
    dropped = [c for c in (*DROPPED_COLUMNS, *LANGUAGE_COLUMNS) if c in table.column_names]
    episode_index = table.column("episode_index").to_numpy()
    timestamps = table.column("timestamp").to_numpy().astype(np.float32)
    runs = _episode_runs(episode_index)
    # Only a shard with episodes this run leaves alone needs its old rows (and their type).
    kept = _kept_columns(table, src) if any(ep not in prepared for ep, _, _ in runs) else {}
    table = table.drop_columns(dropped)
    if len({ep for ep, _, _ in runs}) != len(runs):
        log.warning("%s: an episode's frames are not contiguous; one row group per run", src)
    schema = table.schema.append(pa.field(PERSISTENT, column_array([], PERSISTENT).type))
    schema = schema.append(pa.field(EVENTS, column_array([], EVENTS).type))
    meta = _hf_metadata(table.schema, dropped)
    if meta is not None:
        schema = schema.with_metadata(meta)
    with atomic_path(dst) as tmp:
        with pq.ParquetWriter(tmp, schema, compression=codec) as writer:
            for episode, start, stop in runs:
                n = stop - start
                part = table.slice(start, n)
                ep = prepared.get(episode)
                if ep is None:  # not annotated in this run: its rows stay as they are
                    columns = [
                        kept[name].slice(start, n) if name in kept else column_array([[]] * n, name)
                        for name in (PERSISTENT, EVENTS)
                    ]
                    stats["kept"] += _count(columns[1]) + (_count(columns[0][:1]) if n else 0)
                else:
                    columns = [
                        ep.persistent_array.take(pa.array(np.zeros(n, dtype=np.int64))),
                        column_array(
                            [ep.events.get(float(t), []) for t in timestamps[start:stop]], EVENTS
                        ),
                    ]
                    stats["events_placed"] += _count(columns[1])
                part = part.append_column(schema.field(PERSISTENT), columns[0])
                part = part.append_column(schema.field(EVENTS), columns[1])
                writer.write_table(part.replace_schema_metadata(schema.metadata), row_group_size=n)


def _annotated_info(info: dict) -> dict:
    info = copy.deepcopy(info)
    features = info.setdefault("features", {})
    for name in LANGUAGE_COLUMNS:
        features[name] = copy.deepcopy(LANGUAGE_FEATURE)
    tools = list(info.get("tools") or [])
    if not any(
        (t.get("function") or {}).get("name") == "say" for t in tools if isinstance(t, dict)
    ):
        tools.append(copy.deepcopy(SAY_TOOL))
    info["tools"] = tools
    return info


def write_annotated(
    dataset: Any,
    rows_of: EpisodeRows,
    episodes: Iterable[int],
    modules: Iterable[str],
    destination: str | os.PathLike | None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the annotated dataset (``destination=None``: in place); return the manifest.

    ``rows_of(episode)``: the episode's rows as the dataset gets them, each with the module
    it comes from (``pipeline.staging.written_rows``: the staging files through the one
    merge rule); ``modules`` names them in the manifest.

    ``provenance`` (what produced the rows: backend, model, prompts digest) goes into
    ``meta/episcribe.json`` with the tool's version, the date and the episodes written.
    """
    source = Path(dataset.root).resolve()
    dest = source if destination is None else Path(destination).resolve()
    modules = list(modules)
    episodes = sorted({int(e) for e in episodes})
    missing = sorted(set(episodes) - set(dataset.episode_indices()))
    if missing:
        raise UserError(f"episodes {missing} are not in the dataset {source}")
    if destination is not None:
        _check_destination(source, dest)

    prepared = _prepare(rows_of, episodes)  # raises first
    shards = [Path(p).resolve() for p in dataset.data_files()]
    # Files the source lacks (published datasets often do) hold none of these episodes
    # (LeRobotDataset.open checked): the output lacks them too, as the source does.
    absent = [Path(p).resolve() for p in dataset.absent_files()]
    shards = [p for p in shards if p not in absent]
    if absent:
        log.warning(
            "%d file(s) meta/episodes names are missing in %s and stay missing in the output: %s",
            len(absent),
            source,
            ", ".join(str(p.relative_to(source)) for p in absent[:5]),
        )
    files_written: list[str] = []
    linked = copied = 0
    if dest.exists():
        note = finish_interrupted(dest)
        if note:
            log.warning("%s", note)
        for path in remove_stale_temporaries(dest):
            log.info("removed %s, left by an interrupted write", path)
    if destination is not None:
        dest.mkdir(parents=True, exist_ok=True)
        write_json(dest / MARKER, {"tool": "episcribe", "source": str(source)})
        skip = {*shards, source / "meta" / "info.json", source / PROVENANCE}
        for dirpath, dirnames, filenames in os.walk(source):
            # Hidden directories (.cache of a Hub download, .git) are not dataset content.
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                src = Path(dirpath) / name
                if src in skip or name == MARKER or (name.startswith(".") and ".tmp-" in name):
                    continue
                how = _link_or_copy(src, dest / src.relative_to(source))
                linked += how == "linked"
                copied += how == "copied"

    stats = {"events_placed": 0, "kept": 0}
    commit = FileCommit(dest)
    try:
        for shard in shards:
            target = dest / shard.relative_to(source)
            _rewrite_shard(shard, commit.pending(target), prepared, stats)
            files_written.append(str(target.relative_to(dest)))
            log.info("wrote %s (pending)", target)

        write_json(
            commit.pending(dest / PROVENANCE),
            {
                "tool": "episcribe",
                "version": __version__,
                "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "episodes_annotated": episodes,
                "modules": modules,
                **(provenance or {}),
            },
        )
        # From disk, not dataset.info: keep every key exactly as the user's file has it.
        info = json.loads((source / "meta" / "info.json").read_text(encoding="utf-8"))
        write_json(commit.pending(dest / "meta" / "info.json"), _annotated_info(info))
        files_written += ["meta/info.json", PROVENANCE]
    except BaseException:
        commit.discard()
        raise
    commit.apply()

    n_events = sum(ep.n_events() for ep in prepared.values())
    if stats["events_placed"] != n_events:
        log.warning(
            "%d of %d event rows matched no frame timestamp and were not written",
            n_events - stats["events_placed"],
            n_events,
        )
    return {
        "destination": str(dest),
        "in_place": destination is None,
        "episodes": episodes,
        "modules": modules,
        "files_written": files_written,
        "files_linked": linked,
        "files_copied": copied,
        "rows": {
            PERSISTENT: sum(len(ep.persistent) for ep in prepared.values()),
            EVENTS: stats["events_placed"],
        },
        "events_unplaced": n_events - stats["events_placed"],
        "rows_kept_of_other_episodes": stats["kept"],
        "missing_in_source": [str(p.relative_to(source)) for p in absent],
    }

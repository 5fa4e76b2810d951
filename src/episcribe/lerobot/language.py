"""The output vocabulary: styles, column routing, Arrow types and the ``say`` tool.

This module is the single source of truth for what an annotation row looks like.
Every other part of the package (modules, staging, validation, writer) imports
these names instead of repeating them.

A *row* is a plain dict with exactly the keys of ``ROW_KEYS``:
``role`` (str), ``content`` (str | None), ``style`` (str | None), ``timestamp``
(float: the float32 frame timestamp widened to float64 so it round-trips exactly),
``camera`` (str | None) and ``tool_calls`` (list of dicts | None).

Arrow types are declared explicitly, field order and nullability included, and
the writer casts to them; a schema is never inferred from dict order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import pyarrow as pa

PERSISTENT = "language_persistent"
EVENTS = "language_events"
LANGUAGE_COLUMNS = (PERSISTENT, EVENTS)
LanguageColumn = Literal["language_persistent", "language_events"]

ROW_KEYS = ("role", "content", "style", "timestamp", "camera", "tool_calls")

PERSISTENT_STYLES = frozenset({"subtask", "plan", "memory", "motion", "task_aug"})
# ``None`` is the style of tool-call-only rows (speech atoms); they are events.
EVENT_STYLES = frozenset({"interjection", "vqa", "trace", None})
# Styles whose content is about one camera view: ``camera`` is required for these
# and must be null for every other style.
CAMERA_STYLES = frozenset({"vqa", "trace"})

# Styles that stay in staging and never reach the dataset (``staging.merge_modules``
# leaves them out): a keystate of the robot's signals; a subtask boundary the plan module
# moved onto one; the task the plan module worked under, which the modules downstream read;
# a span the model gave before stitching (what ``episcribe eval`` scores beside the written
# subtasks). Their content is a JSON object (see the signals and plan modules).
STAGING_STYLES = frozenset({"keystate", "snap", "task", "model_segment"})

# The ``info.json`` feature entry of both language columns.
LANGUAGE_FEATURE: dict[str, Any] = {"dtype": "language", "shape": [1], "names": None}

# tool_calls element type. LeRobot's own datasets/language.py declares each tool
# call as Arrow's canonical JSON extension type (``arrow.json``, storage: utf8)
# when pyarrow has it, and pyarrow 26 does. We use the same type so a LeRobot
# reader sees exactly the schema it declares; in Parquet it is a string column
# with the JSON logical type. Each list element is the JSON text of ONE call
# (see ``encode_tool_calls``/``decode_tool_calls``). pa.array() cannot build
# extension values from Python objects, so arrays are built with the string
# storage type (``*_STORAGE`` below) and then cast, which is zero-copy.
TOOL_CALL_TYPE = pa.json_() if hasattr(pa, "json_") else pa.string()


def _persistent_row(tool_call_type: pa.DataType) -> pa.StructType:
    return pa.struct(
        [
            pa.field("role", pa.string(), nullable=False),
            pa.field("content", pa.string()),
            pa.field("style", pa.string()),
            pa.field("timestamp", pa.float32(), nullable=False),
            pa.field("camera", pa.string()),
            pa.field("tool_calls", pa.list_(tool_call_type)),
        ]
    )


def _event_row(tool_call_type: pa.DataType) -> pa.StructType:
    return pa.struct(
        [
            pa.field("role", pa.string(), nullable=False),
            pa.field("content", pa.string()),
            pa.field("style", pa.string()),
            pa.field("camera", pa.string()),
            pa.field("tool_calls", pa.list_(tool_call_type)),
        ]
    )


PERSISTENT_ROW = _persistent_row(TOOL_CALL_TYPE)
EVENT_ROW = _event_row(TOOL_CALL_TYPE)
PERSISTENT_COLUMN = pa.list_(PERSISTENT_ROW)
EVENT_COLUMN = pa.list_(EVENT_ROW)
COLUMN_TYPES: dict[str, pa.DataType] = {PERSISTENT: PERSISTENT_COLUMN, EVENTS: EVENT_COLUMN}

# Same layout with plain strings for tool calls: what pa.array() builds before the cast.
PERSISTENT_COLUMN_STORAGE = pa.list_(_persistent_row(pa.string()))
EVENT_COLUMN_STORAGE = pa.list_(_event_row(pa.string()))

SAY_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "say",
        "description": (
            "Speak a short sentence aloud to the person working with the robot, "
            "e.g. to acknowledge a request or report what the robot is doing."
        ),
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
}


def column_for_style(style: str | None) -> LanguageColumn:
    """Return the column rows of ``style`` go to; ``ValueError`` for an unknown style."""
    if style in PERSISTENT_STYLES:
        return PERSISTENT
    if style in EVENT_STYLES:
        return EVENTS
    raise ValueError(
        f"unknown language style {style!r}; known styles: "
        f"{sorted(PERSISTENT_STYLES)} (persistent), "
        f"{sorted(s for s in EVENT_STYLES if s)} and null (events)"
    )


def float32_timestamp(ts: float) -> float:
    """``ts`` rounded to float32 and widened back, so it equals the stored frame timestamp."""
    return float(np.float32(ts))


def float32_or_none(ts: Any) -> float | None:
    """``float32_timestamp`` of a staged value, or None when it is not a number."""
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    return float32_timestamp(ts)


def make_row(
    role: str,
    content: str | None,
    style: str | None,
    timestamp: float,
    camera: str | None = None,
    tool_calls: list[dict] | None = None,
) -> dict[str, Any]:
    """Build one row dict with exactly ``ROW_KEYS``."""
    return {
        "role": role,
        "content": content,
        "style": style,
        "timestamp": float32_timestamp(timestamp),
        "camera": camera,
        "tool_calls": None if tool_calls is None else [dict(c) for c in tool_calls],
    }


def speech_atom(text: str, timestamp: float) -> dict[str, Any]:
    """A tool-call-only row: the robot says ``text`` at ``timestamp``."""
    call = {"type": "function", "function": {"name": "say", "arguments": {"text": text}}}
    return make_row("assistant", None, None, timestamp, None, [call])


def is_speech_atom(row: Mapping[str, Any]) -> bool:
    """True for a style-null row whose tool calls include a ``say`` call."""
    if row.get("style") is not None or not row.get("tool_calls"):
        return False
    return any(
        isinstance(c, Mapping) and (c.get("function") or {}).get("name") == "say"
        for c in row["tool_calls"]
    )


def _nullable(value: Any) -> tuple[int, Any]:
    # None sorts before every string, deterministically.
    return (0, "") if value is None else (1, value)


def _tie_break(row: Mapping[str, Any]) -> tuple:
    calls = row.get("tool_calls")
    return (
        _nullable(row.get("content")),
        _nullable(None if calls is None else json.dumps(calls, sort_keys=True)),
    )


def persistent_sort_key(row: Mapping[str, Any]) -> tuple:
    """Order of persistent rows: (timestamp, style, role), then content for determinism."""
    return (
        float(row["timestamp"]),
        _nullable(row.get("style")),
        _nullable(row.get("role")),
        _nullable(row.get("camera")),
        *_tie_break(row),
    )


def event_sort_key(row: Mapping[str, Any]) -> tuple:
    """Order of events within one frame: (style, role, camera), then content."""
    return (
        _nullable(row.get("style")),
        _nullable(row.get("role")),
        _nullable(row.get("camera")),
        *_tie_break(row),
    )


def encode_tool_calls(calls: list[Mapping[str, Any]] | None) -> list[str] | None:
    """Tool calls as stored in Arrow: one JSON text per call (sorted keys, UTF-8)."""
    if calls is None:
        return None
    return [json.dumps(c, sort_keys=True, ensure_ascii=False) for c in calls]


def decode_tool_calls(values: Iterable[str] | None) -> list[dict] | None:
    """Inverse of ``encode_tool_calls``: the JSON texts read back from a shard."""
    if values is None:
        return None
    return [json.loads(v) for v in values]


def to_arrow_row(row: Mapping[str, Any], column: str) -> dict[str, Any]:
    """The struct value of ``row`` in ``column`` (events carry no timestamp)."""
    out = {
        "role": row["role"],
        "content": row.get("content"),
        "style": row.get("style"),
        "camera": row.get("camera"),
        "tool_calls": encode_tool_calls(row.get("tool_calls")),
    }
    if column == PERSISTENT:
        out["timestamp"] = float32_timestamp(row["timestamp"])
    return out


def from_arrow_row(value: Mapping[str, Any]) -> dict[str, Any]:
    """A struct value read from a shard (``to_pylist()``) back as a row dict.

    Event rows have no timestamp; their ``timestamp`` is None here (it is the frame's).
    """
    ts = value.get("timestamp")
    return {
        "role": value["role"],
        "content": value.get("content"),
        "style": value.get("style"),
        "timestamp": None if ts is None else float(ts),
        "camera": value.get("camera"),
        "tool_calls": decode_tool_calls(value.get("tool_calls")),
    }


def column_array(values: list[list[dict[str, Any]]], column: str) -> pa.Array:
    """An Arrow array of ``column``'s exact type from per-frame lists of struct values.

    ``values`` holds, per frame, the ``to_arrow_row`` dicts of that frame.
    """
    storage = PERSISTENT_COLUMN_STORAGE if column == PERSISTENT else EVENT_COLUMN_STORAGE
    return pa.array(values, type=storage).cast(COLUMN_TYPES[column])

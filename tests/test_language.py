"""The vocabulary: routing, Arrow types, row builders and sort orders."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from episcribe.lerobot import language as L
from episcribe.modules import registry


def test_every_style_routes_to_exactly_one_column():
    for style in L.PERSISTENT_STYLES:
        assert L.column_for_style(style) == "language_persistent"
    for style in L.EVENT_STYLES:
        assert L.column_for_style(style) == "language_events"
    assert not L.PERSISTENT_STYLES & L.EVENT_STYLES
    assert L.CAMERA_STYLES <= L.EVENT_STYLES


@pytest.mark.parametrize("style", ["Subtask", "speech", "", "narration"])
def test_unknown_style_is_rejected(style):
    with pytest.raises(ValueError, match="unknown language style"):
        L.column_for_style(style)


def test_module_styles_are_known_styles():
    known = L.PERSISTENT_STYLES | L.EVENT_STYLES
    for styles in (spec.styles for spec in registry.SPECS):
        assert styles <= known | L.STAGING_STYLES
    # Staging-only styles are never a column's: the writer could not route them.
    assert not L.STAGING_STYLES & known
    assert registry.MODULES["plan_update"].styles == {"plan"}
    assert None in registry.MODULES["interjections"].styles


def test_struct_field_order_and_nullability_follow_the_spec():
    p = L.PERSISTENT_ROW
    assert [f.name for f in p] == ["role", "content", "style", "timestamp", "camera", "tool_calls"]
    assert [f.nullable for f in p] == [False, True, True, False, True, True]
    assert p.field("timestamp").type == pa.float32()
    e = L.EVENT_ROW
    assert [f.name for f in e] == ["role", "content", "style", "camera", "tool_calls"]
    assert [f.nullable for f in e] == [False, True, True, True, True]
    assert L.PERSISTENT_COLUMN == pa.list_(p) and L.EVENT_COLUMN == pa.list_(e)
    # tool_calls: list of Arrow JSON (what LeRobot declares), one JSON text per call.
    assert p.field("tool_calls").type == pa.list_(pa.json_())


def test_make_row_timestamp_round_trips_through_float32():
    row = L.make_row("assistant", "x", "subtask", 0.1)
    assert set(row) == set(L.ROW_KEYS)
    assert row["timestamp"] == float(np.float32(0.1))
    assert float(np.float32(row["timestamp"])) == row["timestamp"]


def test_speech_atom_has_the_spec_shape():
    atom = L.speech_atom("On it!", 1.5)
    assert atom == {
        "role": "assistant",
        "content": None,
        "style": None,
        "camera": None,
        "timestamp": 1.5,
        "tool_calls": [
            {"type": "function", "function": {"name": "say", "arguments": {"text": "On it!"}}}
        ],
    }
    assert L.is_speech_atom(atom)
    assert not L.is_speech_atom(L.make_row("user", "hi", "interjection", 1.5))


def test_say_tool_schema():
    fn = L.SAY_TOOL["function"]
    assert L.SAY_TOOL["type"] == "function" and fn["name"] == "say" and fn["description"]
    assert fn["parameters"] == {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }


def test_persistent_sort_is_timestamp_style_role():
    rows = [
        L.make_row("assistant", "b", "subtask", 1.0),
        L.make_row("assistant", "p", "plan", 1.0),
        L.make_row("user", "t", "task_aug", 0.0),
        L.make_row("assistant", "a", "subtask", 0.0),
    ]
    ordered = sorted(rows, key=L.persistent_sort_key)
    assert [(r["timestamp"], r["style"]) for r in ordered] == [
        (0.0, "subtask"),
        (0.0, "task_aug"),
        (1.0, "plan"),
        (1.0, "subtask"),
    ]


def test_event_sort_puts_null_first_and_is_deterministic():
    rows = [
        L.make_row("user", "q", "vqa", 0.0, "cam_b"),
        L.make_row("assistant", "{}", "vqa", 0.0, "cam_a"),
        L.make_row("user", "q", "vqa", 0.0, "cam_a"),
        L.speech_atom("ok", 0.0),
        L.make_row("user", "stop", "interjection", 0.0),
    ]
    ordered = sorted(rows, key=L.event_sort_key)
    assert [(r["style"], r["role"], r["camera"]) for r in ordered] == [
        (None, "assistant", None),
        ("interjection", "user", None),
        ("vqa", "assistant", "cam_a"),
        ("vqa", "user", "cam_a"),
        ("vqa", "user", "cam_b"),
    ]
    assert sorted(reversed(rows), key=L.event_sort_key) == ordered


def test_column_arrays_have_exact_types_and_survive_parquet(tmp_path):
    atom = L.speech_atom("héllo", 0.5)
    persistent = [L.to_arrow_row(L.make_row("assistant", "x", "plan", 0.5), L.PERSISTENT)]
    events = [L.to_arrow_row(atom, L.EVENTS)]
    table = pa.table(
        {
            L.PERSISTENT: L.column_array([persistent, []], L.PERSISTENT),
            L.EVENTS: L.column_array([events, []], L.EVENTS),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    back = pq.read_table(tmp_path / "t.parquet")
    assert back.schema.field(L.PERSISTENT).type == L.PERSISTENT_COLUMN
    assert back.schema.field(L.EVENTS).type == L.EVENT_COLUMN
    got = back.column(L.EVENTS).to_pylist()[0][0]
    assert json.loads(got["tool_calls"][0])["function"]["arguments"]["text"] == "héllo"
    row = L.from_arrow_row(got)
    assert row["tool_calls"] == atom["tool_calls"] and row["timestamp"] is None

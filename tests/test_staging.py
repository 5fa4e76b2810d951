"""Staging files: path grammar, deterministic JSONL, atomic writes, clear read errors."""

from __future__ import annotations

import json

import pytest

from episcribe.errors import UserError
from episcribe.lerobot import language as L
from episcribe.pipeline import staging as S


def _rows():
    return [
        L.make_row("user", "q", "vqa", 0.2, "observation.images.top"),
        L.speech_atom("Sure, ça marche", 0.0),
        L.make_row("assistant", "grab", "subtask", 0.0),
        L.make_row("assistant", "1. grab", "plan", 0.0),
    ]


def test_path_grammar(tmp_path):
    assert S.staging_file(tmp_path, 7, "vqa") == tmp_path / "episode_000007" / "vqa.jsonl"


@pytest.mark.parametrize("module", ["VQA", "memory", "", "plan.jsonl"])
def test_unknown_module_is_rejected(tmp_path, module):
    with pytest.raises(ValueError, match="unknown module"):
        S.staging_file(tmp_path, 0, module)


def test_round_trip_preserves_rows(tmp_path):
    path = S.staging_file(tmp_path, 3, "plan")
    S.write_rows(path, _rows())
    back = S.read_rows(path)
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(back, key=key) == sorted(_rows(), key=key)


def test_output_is_byte_identical_whatever_the_input_order(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    S.write_rows(a, _rows())
    S.write_rows(b, list(reversed(_rows())))
    assert a.read_bytes() == b.read_bytes()
    lines = a.read_text(encoding="utf-8").splitlines()
    assert all(json.dumps(json.loads(x), sort_keys=True, ensure_ascii=False) == x for x in lines)
    assert "ça marche" in a.read_text(encoding="utf-8")  # not \u-escaped: diffs stay readable


def test_write_leaves_no_temporary_files(tmp_path):
    path = S.staging_file(tmp_path, 0, "vqa")
    S.write_rows(path, _rows())
    S.write_rows(path, [])
    assert [p.name for p in path.parent.iterdir()] == ["vqa.jsonl"]
    assert path.read_text() == ""


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = S.staging_file(tmp_path, 0, "plan")
    S.write_rows(path, _rows())
    before = path.read_bytes()
    with pytest.raises(TypeError):
        S.write_rows(path, [{**_rows()[0], "content": object()}])
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["plan.jsonl"]


def test_bad_json_error_names_file_and_line(tmp_path):
    path = tmp_path / "plan.jsonl"
    good = json.dumps(_rows()[0])
    path.write_text(good + "\n{not json\n")
    with pytest.raises(UserError, match=r"plan\.jsonl:2: not valid JSON"):
        S.read_rows(path)


def test_row_missing_keys_is_reported(tmp_path):
    path = tmp_path / "vqa.jsonl"
    path.write_text('{"role": "user"}\n')
    with pytest.raises(UserError, match=r"vqa\.jsonl:1: row lacks key\(s\) content"):
        S.read_rows(path)

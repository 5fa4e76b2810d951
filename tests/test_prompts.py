"""Prompt templates and answer schemas: present, valid, renderable, and in step with the fake."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import pytest

from episcribe.errors import UserError
from episcribe.modules.prompts import (
    EVAL_PROMPT_KINDS,
    MODULE_PROMPT_KINDS,
    Prompt,
    PromptSet,
    prompt_files,
    strip_notes,
)
from episcribe.modules.vqa.run import coordinate_system
from episcribe.vlm.fake_answers import Request, plausible

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
KINDS = [kind for kinds in MODULE_PROMPT_KINDS.values() for kind in kinds]
# Calls whose request lists the timestamps of several frames (a VQA call shows one frame;
# segment continues the describe conversation, whose request holds them).
FRAMES = {"describe", "derive_task", "interjection"}
# What each call kind's module passes to render(): a template may use any of these.
FIELDS = {
    "describe": {"camera", "layout", "window", "timestamps", "max_entries"},
    "segment": {"context", "task", "max_steps", "min_seconds", "first", "last", "keystates"},
    "relabel": {"task", "index", "count", "start", "end", "previous", "following", "label"},
    "task_rephrasings": {"task", "n"},
    "derive_task": {"camera", "layout", "timestamps", "dataset_task"},
    "memory": {"task", "previous_memory", "completed", "remaining"},
    "initial_speech": {"task"},
    "interjection": {"task", "camera", "layout", "timestamps", "boundary", "previous_subtask",
                     "next_subtask", "scenario", "scenario_hint"},
    "plan_refresh": {"task", "done", "remaining", "n_remaining", "interjection"},
    **{k: {"camera", "task", "coordinate_system"} for k in MODULE_PROMPT_KINDS["vqa"]},
}  # fmt: skip


def sample_fields(kind: str) -> dict:
    fields = {name: f"<{name}>" for name in FIELDS[kind]}
    fields["timestamps"] = "0.000, 0.500, 1.000"
    fields["task"] = "Pick up the yellow bottle"
    if "coordinate_system" in fields:
        fields["coordinate_system"] = coordinate_system("normalized_1000", (640, 480))
    return fields


def objects(schema: dict):
    yield schema
    for sub in schema.get("properties", {}).values():
        yield from objects(sub)
    if isinstance(schema.get("items"), dict):
        yield from objects(schema["items"])


@pytest.mark.parametrize("kind", KINDS)
def test_every_call_kind_has_a_template_and_a_strict_answer_schema(kind):
    prompt = PromptSet(PROMPTS).get(kind)
    assert set(prompt.fields) <= FIELDS[kind], "uses only placeholders its module provides"
    assert prompt.schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(prompt.schema)
    for node in objects(prompt.schema):
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
            assert set(node["required"]) == set(node["properties"])
    text = prompt.render(**sample_fields(kind))
    assert "{" not in text.replace('{"', "").split("JSON object and nothing else")[0]
    assert not text.lstrip().startswith("#"), "editor notes are not sent"
    if kind in FRAMES:
        assert "\nFrame timestamps (s): 0.000, 0.500, 1.000\n" in text


@pytest.mark.parametrize("kind", KINDS)
def test_the_fake_servers_answers_fit_the_schemas(kind):
    # The fake answers by kind; a renamed field would make it fall back to generic values.
    prompt = PromptSet(PROMPTS).get(kind)
    body = {
        "messages": [{"role": "user", "content": prompt.render(**sample_fields(kind))}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": kind, "schema": prompt.schema},
        },
    }
    answer = plausible(Request(body, [(640, 480)]), random.Random(0))
    jsonschema.validate(answer, prompt.schema)


def test_vqa_prompts_state_the_coordinate_system():
    prompts = PromptSet(PROMPTS)
    for kind in MODULE_PROMPT_KINDS["vqa"]:
        fields = sample_fields(kind)
        assert "Coordinate system: normalized 0-1000" in prompts.get(kind).render(**fields)
        fields["coordinate_system"] = coordinate_system("pixels", (384, 288))
        text = prompts.get(kind).render(**fields)
        assert "Coordinate system: pixels of the image as shown (384x288)" in text


def test_prompt_files_are_exactly_each_modules_templates_and_schemas():
    for module, kinds in MODULE_PROMPT_KINDS.items():
        files = prompt_files(PROMPTS, module)
        assert {f.name for f in files} == {
            f"{k}{ext}" for k in kinds for ext in (".txt", ".schema.json")
        }
        assert all(f.is_file() for f in files)
    on_disk = {p.name for p in PROMPTS.rglob("*") if p.suffix in (".txt", ".json")}
    evaluation = {f"{k}{ext}" for k in EVAL_PROMPT_KINDS for ext in (".txt", ".schema.json")}
    assert (
        on_disk
        == {f.name for m in MODULE_PROMPT_KINDS for f in prompt_files(PROMPTS, m)} | evaluation
    )
    with pytest.raises(ValueError, match="unknown module"):
        prompt_files(PROMPTS, "nope")


def test_missing_placeholder_names_the_file_and_the_key(tmp_path):
    (tmp_path / "plan").mkdir()
    (tmp_path / "plan" / "memory.txt").write_text("# a note\nTask: {task}\nMemory: {previous}\n")
    (tmp_path / "plan" / "memory.schema.json").write_text(json.dumps({"type": "object"}))
    prompt = PromptSet(tmp_path).get("memory")
    assert prompt.template == "Task: {task}\nMemory: {previous}\n"
    with pytest.raises(UserError, match=r"memory\.txt uses the placeholder \{previous\}"):
        prompt.render(task="x", previous_memory="y")


def test_missing_or_broken_files_are_user_errors_naming_them(tmp_path):
    with pytest.raises(UserError, match=r"vqa/vqa_bbox\.txt is missing"):
        PromptSet(tmp_path).get("vqa_bbox")
    plan = tmp_path / "plan"
    plan.mkdir()
    (plan / "memory.txt").write_text('Answer as {"memory": ...}')
    (plan / "memory.schema.json").write_text("{}")
    with pytest.raises(UserError, match=r"memory\.txt.*\{\{"):
        PromptSet(tmp_path).get("memory")
    (plan / "memory.txt").write_text("ok {task}")
    (plan / "memory.schema.json").write_text("{not json")
    with pytest.raises(UserError, match=r"memory\.schema\.json is not valid JSON"):
        PromptSet(tmp_path).get("memory")


def test_prompts_are_loaded_once_and_item_limits_are_set_on_a_copy():
    prompts = PromptSet(PROMPTS)
    prompt = prompts.get("segment")
    assert prompts.get("segment") is prompt
    limited = prompt.schema_with_items("subtasks", 1, 3)
    assert limited["properties"]["subtasks"]["maxItems"] == 3
    assert "maxItems" not in prompt.schema["properties"]["subtasks"]


def test_strip_notes_only_removes_the_leading_note_block():
    assert strip_notes("# a\n# b\nText\n# kept\n") == "Text\n# kept\n"
    assert Prompt("k", "Hi {name}", {}).render(name="Ada", extra=1) == "Hi Ada"


# Calls over the plan's frames send no instructions before them, so they share the
# frames as a prompt prefix; every other call opens with instructions that do not change.
SHARED_FRAMES = {"describe", "segment", "derive_task"}


@pytest.mark.parametrize("kind", KINDS)
def test_instructions_are_the_same_for_every_call_of_a_kind(kind):
    prompt = PromptSet(PROMPTS).get(kind)
    one = sample_fields(kind)
    other = {k: (v if k == "coordinate_system" else f"{v} (another call)") for k, v in one.items()}
    (first, request), (second, _) = prompt.render_parts(**one), prompt.render_parts(**other)
    assert first == second and request
    assert bool(first) == (kind not in SHARED_FRAMES)


def test_vqa_requests_state_the_task_and_the_camera_but_no_timestamp():
    prompts = PromptSet(PROMPTS)
    for kind in MODULE_PROMPT_KINDS["vqa"]:
        _, request = prompts.get(kind).render_parts(**sample_fields(kind))
        assert "Pick up the yellow bottle" in request and "<camera>" in request
        assert "timestamp" not in prompts.get(kind).render(**sample_fields(kind)).lower()


def test_spatial_relations_come_from_a_fixed_list():
    schema = PromptSet(PROMPTS).get("vqa_spatial").schema
    relation = schema["properties"]["answer"]["properties"]["relation"]
    assert relation["enum"] == [
        "left of", "right of", "above", "below", "in front of", "behind", "inside", "on top of",
        "next to",
    ]  # fmt: skip
    jsonschema.validate({"question": "q", "answer": {"subject": "a", "relation": "near",
                         "object": "b"}}, {"not": schema})  # fmt: skip

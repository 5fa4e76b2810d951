"""The fake server's answers: JSON valid for the request's schema, reading like robot work.

Deterministic for a request (the caller seeds ``rng`` from it): per call kind a plausible
answer (subtasks over the listed frame timestamps, VQA inside the shown image, ...), else
a generic value for the schema; then, like a Qwen3-class model, a thinking block first
unless the request turned thinking off, and everything cut at the completion budget.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import jsonschema

from episcribe.vlm.sizing import text_tokens

THINK_TOKENS = (150, 600)  # how long the fake thinks, drawn per request
TIMESTAMPS_RE = re.compile(r"Frame timestamps \(s\):\s*([-0-9.,\s]+)")
TASK_RE = re.compile(r"^Task:\s*(.+)$", re.MULTILINE)
NORMALIZED = "Coordinate system: normalized 0-1000"

VERBS = ("reach for", "grasp", "lift", "move", "place", "open", "close", "push", "rotate")
OBJECTS = ("bottle", "cup", "block", "drawer", "lid", "sponge", "towel", "bowl", "box")
COLORS = ("red", "blue", "green", "yellow", "white", "black")
PLACES = ("the table", "the tray", "the bin", "the shelf", "the left side", "the right side")
RELATIONS = ("left of", "right of", "above", "below", "behind", "in front of", "on top of",
             "next to", "inside")  # fmt: skip
ATTRIBUTES = {"color": COLORS, "state": ("open", "closed", "empty", "full", "upright")}


# -- text that reads like robot manipulation -----------------------------------------


def _thing(rng: random.Random) -> str:
    return f"{rng.choice(COLORS)} {rng.choice(OBJECTS)}"


def instruction(rng: random.Random) -> str:
    verb = rng.choice(VERBS)
    tail = f" to {rng.choice(PLACES)}" if verb in ("move", "place", "push") else ""
    return f"{verb.capitalize()} the {_thing(rng)}{tail}"


def observation(rng: random.Random) -> str:
    arm = rng.choice(("left", "right"))
    return f"The {arm} gripper is {rng.choice(('near', 'above', 'holding', 'beside'))} the " + (
        f"{_thing(rng)} on {rng.choice(PLACES)}."
    )


def sentence(rng: random.Random) -> str:
    return rng.choice((instruction(rng) + ".", observation(rng)))


# -- a generic generator for JSON Schemas --------------------------------------------


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        return _resolve(node, root)
    return schema


def generate(schema: dict, rng: random.Random, root: dict | None = None) -> Any:
    """A value valid for ``schema`` (the subset structured-output servers support)."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return generate(schema[key][0], rng, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((t for t in kind if t != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties", {})
        return {name: generate(sub, rng, root) for name, sub in props.items()}
    if kind == "array":
        lo = schema.get("minItems", 1)
        hi = schema.get("maxItems", max(lo, 3))
        items = [generate(schema.get("items", {}), rng, root) for _ in range(rng.randint(lo, hi))]
        if schema.get("uniqueItems"):
            items = _unique(items, schema.get("items", {}), rng, root)
        return items
    if kind == "string":
        text = sentence(rng)
        text = text + " ok" * max(0, schema.get("minLength", 0) - len(text))
        return text[: schema.get("maxLength", len(text))]
    if kind in ("integer", "number"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        hi = schema.get("maximum", schema.get("exclusiveMaximum", lo + 11) - 1)
        return rng.randint(int(lo), int(hi)) if kind == "integer" else round(rng.uniform(lo, hi), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def _unique(items: list, item_schema: dict, rng: random.Random, root: dict) -> list:
    seen: list = []
    for item in items:
        tries = 0
        while item in seen and tries < 20:
            item, tries = generate(item_schema, rng, root), tries + 1
        if item in seen and isinstance(item, str):
            item = f"{item} ({len(seen)})"
        seen.append(item)
    return seen


# -- plausible answers per call kind -------------------------------------------------


class Request:
    """What the answer generators need from one chat request."""

    def __init__(self, body: dict, image_sizes: list[tuple[int, int]]):
        fmt = body.get("response_format") or {}
        spec = fmt.get("json_schema") or {}
        self.kind: str | None = spec.get("name")
        self.schema: dict | None = spec.get("schema") if fmt.get("type") == "json_schema" else None
        self.text = "\n".join(_texts(body["messages"]))
        self.image_sizes = image_sizes
        kwargs = body.get("chat_template_kwargs") or {}
        # Qwen3-class chat templates think unless told not to.
        self.thinking = kwargs.get("enable_thinking", True) is not False
        self.prompt_tokens = self.budget = self.cached_tokens = 0  # set once counted
        match = TIMESTAMPS_RE.search(self.text)
        times = [float(t) for t in re.findall(r"-?\d+(?:\.\d+)?", match.group(1))] if match else []
        self.times = times or [0.0]
        task = TASK_RE.search(self.text)
        self.task = task.group(1).strip().rstrip(".") if task else None
        if NORMALIZED in self.text or not image_sizes:
            self.width = self.height = 1000
        else:
            self.width, self.height = image_sizes[0]


def max_items(schema: dict | None, *path: str, default: int) -> tuple[int, int]:
    node = schema or {}
    for key in path:
        node = node.get("properties", {}).get(key, {})
    lo = node.get("minItems", 1)
    return lo, node.get("maxItems", max(lo, default))


def _segment(req: Request, rng: random.Random) -> dict:
    lo, hi = max_items(req.schema, "subtasks", default=4)
    first, last = req.times[0], req.times[-1]
    n = max(lo, min(hi, rng.randint(2, 4)))
    cuts = sorted(rng.uniform(first, last) for _ in range(n - 1))
    bounds = [first, *(round(c, 3) for c in cuts), last]
    return {
        "subtasks": [
            {"instruction": instruction(rng), "start": bounds[i], "end": bounds[i + 1]}
            for i in range(n)
        ]
    }


def _rephrasings(req: Request, rng: random.Random) -> dict:
    lo, hi = max_items(req.schema, "rephrasings", default=5)
    n = max(lo, min(hi, 5))
    task = req.task or instruction(rng).lower()
    openers = ("Please", "Could you", "Go ahead and", "I need you to", "Now", "Carefully")
    out: list[str] = []
    while len(out) < n:
        line = f"{openers[len(out) % len(openers)]} {task[0].lower() + task[1:]}"
        line += "" if len(out) < len(openers) else f", step {len(out)}"
        out.append(line + ("?" if line.startswith("Could") else "."))
    return {"rephrasings": out}


def _bbox(req: Request, rng: random.Random) -> list[int]:
    w, h = req.width, req.height
    x1, y1 = rng.randint(0, w // 2), rng.randint(0, h // 2)
    return [x1, y1, rng.randint(x1 + 1, w - 1), rng.randint(y1 + 1, h - 1)]


def _vqa(req: Request, rng: random.Random, kind: str) -> dict:
    label = rng.choice(OBJECTS)
    if kind == "vqa_bbox":
        question, answer = (
            f"Where is the {label}?",
            {"detections": [{"label": label, "bbox_format": "xyxy", "bbox": _bbox(req, rng)}]},
        )
    elif kind == "vqa_keypoint":
        point = [rng.randint(0, req.width - 1), rng.randint(0, req.height - 1)]
        question = f"Point at the {label}."
        answer = {"label": label, "point_format": "xy", "point": point}
    elif kind == "vqa_count":
        question = f"How many {label}s are visible?"
        answer = {"label": label, "count": rng.randint(1, 3)}
    elif kind == "vqa_attribute":
        attribute = rng.choice(sorted(ATTRIBUTES))
        question = f"What is the {attribute} of the {label}?"
        answer = {
            "label": label,
            "attribute": attribute,
            "value": rng.choice(ATTRIBUTES[attribute]),
        }
    else:
        other = rng.choice([o for o in OBJECTS if o != label])
        relation = rng.choice(RELATIONS)
        question = f"Where is the {label} relative to the {other}?"
        answer = {"subject": label, "relation": relation, "object": other}
    return {"question": question, "answer": answer}


def plausible(req: Request, rng: random.Random) -> dict | None:
    kind = req.kind or ""
    if kind == "describe":
        _, hi = max_items(req.schema, "narration", default=len(req.times))
        times = [req.times[round(i * (len(req.times) - 1) / max(hi - 1, 1))] for i in range(hi)]
        times = sorted(set(times))
        return {"narration": [{"time": t, "observation": observation(rng)} for t in times]}
    if kind == "segment":
        return _segment(req, rng)
    if kind == "task_rephrasings":
        return _rephrasings(req, rng)
    if kind == "derive_task":
        return {"task": instruction(rng)}
    if kind == "relabel":
        return {"instruction": instruction(rng)}
    if kind == "memory":
        return {"memory": f"Done so far: {instruction(rng).lower()}."}
    if kind == "initial_speech":
        return {"speech": f"Okay, I will {instruction(rng).lower()}."}
    if kind == "interjection":
        return {"interjection": f"Actually, {instruction(rng).lower()} first.", "speech": "Sure."}
    if kind == "plan_refresh":
        lo, hi = max_items(req.schema, "plan", default=4)
        return {"plan": [instruction(rng) for _ in range(max(lo, min(hi, rng.randint(2, 4))))]}
    if kind.startswith("vqa_"):
        return _vqa(req, rng, kind)
    return None


def answer(req: Request, rng: random.Random) -> str:
    if req.schema is None:
        return sentence(rng)
    value = plausible(req, rng)
    if value is None or not _valid(value, req.schema):
        value = generate(req.schema, rng)
    return json.dumps(value)


def _valid(value: Any, schema: dict) -> bool:
    return schema_validator(schema).is_valid(value)


# Checking a schema against its meta-schema and building its validator are slow; a run
# sends the same dozen schemas thousands of times, so both are done once per schema.
# The cache is bounded (plan schemas vary in minItems/maxItems, a client could vary more).
_VALIDATORS: dict[str, Any] = {}
_VALIDATORS_MAX = 512


def schema_validator(schema: Any) -> jsonschema.protocols.Validator:
    """The (cached) validator of a JSON Schema; raises SchemaError/TypeError if it is invalid."""
    try:
        key = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the schema is not JSON: {exc}") from None
    found = _VALIDATORS.get(key)
    if found is None:
        try:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
            found = cls(schema)
        except (jsonschema.SchemaError, TypeError) as exc:
            found = exc
        if len(_VALIDATORS) >= _VALIDATORS_MAX:
            _VALIDATORS.clear()
        _VALIDATORS[key] = found  # dict assignment is atomic: handler threads may share it
    if isinstance(found, Exception):
        raise found
    return found


def _texts(messages: list) -> list[str]:
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p.get("text", "") for p in content if p.get("type") == "text")
    return out


def runaway(content: str, budget: int) -> str:
    """The answer as a model that pads constrained JSON does: cut, then whitespace to the end."""
    cut = content.find(",")
    head = content[: cut + 1] if cut > 0 else content[:1]
    return head + "\n" + " " * (budget * 4)


def generation(req: Request, content: str, rng: random.Random, reasoning_field: bool) -> dict:
    """The message, finish reason and completion tokens: thinking first, cut at the budget."""
    thinking = ""
    if req.thinking:
        words = []
        while text_tokens(" ".join(words)) < rng.randint(*THINK_TOKENS):
            words.append(sentence(rng))
        thinking = f"The request is a {req.kind or 'chat'} call. " + " ".join(words)
    think_tokens, answer_tokens = text_tokens(thinking), text_tokens(content)
    finish = "stop"
    if think_tokens > req.budget:
        thinking, content, finish = thinking[: req.budget * 4], "", "length"
    elif think_tokens + answer_tokens > req.budget:
        content, finish = content[: (req.budget - think_tokens) * 4], "length"
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking and reasoning_field:
        message["reasoning_content"] = thinking
    elif thinking:
        closing = "\n</think>\n\n" if finish == "stop" or content else ""
        message["content"] = f"<think>\n{thinking}{closing}{content}"
    tokens = min(req.budget, text_tokens(thinking) + text_tokens(content))
    return {"message": message, "finish_reason": finish, "completion_tokens": tokens}

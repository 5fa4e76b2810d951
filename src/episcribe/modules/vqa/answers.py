"""The five shapes of a VQA answer (SPEC §4), one JSON Schema each, and their checks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import jsonschema

_STR = {"type": "string", "minLength": 1}


def _obj(properties: dict, required: Sequence[str] | None = None) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required or properties),
        "additionalProperties": False,
    }


VQA_SHAPES: dict[str, dict] = {
    "bbox": _obj(
        {
            "detections": {
                "type": "array",
                "items": _obj(
                    {
                        "label": _STR,
                        "bbox_format": {"const": "xyxy"},
                        "bbox": {
                            "type": "array",
                            "items": {"type": "number"},
                            "minItems": 4,
                            "maxItems": 4,
                        },
                    }
                ),
            }
        }
    ),
    "keypoint": _obj(
        {
            "label": _STR,
            "point_format": {"const": "xy"},
            "point": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        }
    ),
    "count": _obj({"label": _STR, "count": {"type": "integer", "minimum": 0}}),
    "attribute": _obj({"label": _STR, "attribute": _STR, "value": _STR}),
    "spatial": _obj({"subject": _STR, "relation": _STR, "object": _STR}),
}
# The key that tells the shapes apart, used to explain which shape an answer missed.
_SHAPE_MARKERS = {
    "detections": "bbox",
    "point": "keypoint",
    "count": "count",
    "attribute": "attribute",
    "subject": "spatial",
}
_VALIDATORS = {name: jsonschema.Draft202012Validator(s) for name, s in VQA_SHAPES.items()}


def vqa_answer_problem(content: Any) -> str | None:
    """None when ``content`` is JSON text in one of the five shapes, else why not."""
    if not isinstance(content, str):
        return "VQA answer content must be JSON text, got " + type(content).__name__
    try:
        answer = json.loads(content)
    except json.JSONDecodeError as exc:
        return f"VQA answer content is not JSON ({exc.msg}): {content[:80]!r}"
    if any(v.is_valid(answer) for v in _VALIDATORS.values()):
        return None
    shapes = ", ".join(VQA_SHAPES)
    if isinstance(answer, dict):
        for key, shape in _SHAPE_MARKERS.items():
            if key in answer:
                err = jsonschema.exceptions.best_match(_VALIDATORS[shape].iter_errors(answer))
                where = "/".join(str(p) for p in err.absolute_path) or "answer"
                return f"VQA answer looks like a {shape} answer but {where}: {err.message}"
    return f"VQA answer is JSON but not one of the shapes {shapes}: {content[:80]!r}"


def answer_points(answer: Any) -> list[tuple[float, float]]:
    if not isinstance(answer, dict):
        return []
    if "detections" in answer:
        return [(d["bbox"][i], d["bbox"][i + 1]) for d in answer["detections"] for i in (0, 2)]
    if "point" in answer:
        return [tuple(answer["point"])]
    return []

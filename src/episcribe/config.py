"""The workflow's configuration: nested sections, validated against one JSON Schema.

Snakemake's ``--config`` hands us flat ``key=value`` pairs whose values are strings unless
they look like numbers or ``True``/``False``, and it refuses dots in keys. So before
validating we

1. expand ``plan__enabled`` (accepted by Snakemake) and ``plan.enabled`` (config files,
   the Python API and the ``episcribe`` wrapper) into nested sections;
2. coerce strings to the type the schema asks for (``false`` -> False, ``[0, 3]`` -> [0, 3]);
3. validate with jsonschema, filling every default from the schema.

Errors name the dotted key and say what is allowed.
"""

from __future__ import annotations

import copy
import os
import textwrap
from collections.abc import Mapping
from typing import Any

import jsonschema
import yaml

from episcribe.errors import ConfigError

KEY_SEPARATORS = ("__", ".")
BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def load_schema() -> dict:
    """schemas/config.schema.yaml with each module folder's part merged in."""
    from episcribe.modules import registry  # module declarations only: pure data

    return registry.config_schema()


def resolve(raw: Mapping[str, Any], schema: dict | None = None) -> dict:
    """Return a new, validated config with every default filled in."""
    schema = schema or load_schema()
    config = _coerce(expand_dotted_keys(raw), schema, path="")
    if isinstance(config.get("vlm"), dict) and "api_key" in config["vlm"]:
        raise ConfigError(
            "vlm.api_key: the API key is not taken from config or the command line (Snakemake "
            "writes both into its logs and job scripts); remove it and export it as "
            "OPENAI_API_KEY, or name another variable with vlm.api_key_env"
        )
    _defaulting_validator(schema).validate(config)
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path)
    )
    if errors:
        raise ConfigError("; ".join(_describe(e) for e in errors))
    return config


def expand_dotted_keys(raw: Mapping[str, Any]) -> dict:
    """``{"plan__enabled": False, "vqa": {"x": 1}}`` -> ``{"plan": {"enabled": False}, ...}``.

    Dotted keys come from the command line, so they override a section of the same name
    from config.yaml whatever order the two arrive in.
    """
    out: dict = {}
    flat_last = sorted(raw.items(), key=lambda item: _split_key(item[0]) != [item[0]])
    for key, value in flat_last:
        parts = _split_key(key)
        if isinstance(value, Mapping):
            value = expand_dotted_keys(value)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key {key!r} nests under a value that is not a section")
        leaf = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = merge_sections(node[leaf], value)
        else:
            node[leaf] = copy.deepcopy(value)
    return out


def _split_key(key: str) -> list[str]:
    parts = [key]
    for sep in KEY_SEPARATORS:
        parts = [piece for part in parts for piece in part.split(sep)]
    return parts


def api_key(vlm: Mapping[str, Any]) -> str:
    """The endpoint's API key, from the environment variable ``vlm.api_key_env`` names
    ("EMPTY", what the openai client sends to a server that wants none, if unset)."""
    return os.environ.get(vlm["api_key_env"]) or "EMPTY"


def dotted_to_snakemake(entry: str) -> str:
    """Rewrite one ``--config`` entry so Snakemake accepts it: ``a.b=1`` -> ``a__b=1``."""
    key, sep, value = entry.partition("=")
    return key.replace(".", "__") + sep + value


def merge_sections(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_sections(merged[key], value)
        else:
            merged[key] = value
    return merged


def _types(schema: dict) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _coerce(value: Any, schema: dict, path: str) -> Any:
    """Turn command-line strings into the types the schema declares; leave the rest alone."""
    types = _types(schema)
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {
            k: _coerce(v, props.get(k, {}), f"{path}.{k}" if path else k) for k, v in value.items()
        }
    if isinstance(value, list) and "items" in schema:
        return [_coerce(v, schema["items"], path) for v in value]
    if not isinstance(value, str):
        return value
    text = value.strip()
    if "null" in types and text in ("null", "~", ""):
        return None
    if "boolean" in types and text.lower() in BOOLEAN_WORDS:
        return BOOLEAN_WORDS[text.lower()]
    if "string" in types or not set(types) & {"integer", "number", "array", "object"}:
        return value
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str):
        return value  # left as a string: validation names the key and the expected type
    return _coerce(parsed, schema, path)


def _defaulting_validator(schema: dict):
    """A validator that fills ``default`` values of properties into the instance."""
    base = jsonschema.Draft202012Validator

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        # Errors are reported by the strict pass in resolve(); this pass only fills.
        yield from ()
        for name, sub in properties.items():
            if isinstance(instance, dict) and name in instance:
                yield from validator.descend(instance[name], sub, path=name)

    extended = jsonschema.validators.extend(base, {"properties": fill_defaults})
    validator = extended(schema)

    class _FillOnly:
        def validate(self, instance):
            for _ in validator.iter_errors(instance):
                pass

    return _FillOnly()


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        return f"{key}: {error.message} (check the spelling against config.yaml)"
    return f"config key {key}: {error.message}"


def render_default_config(schema: dict | None = None) -> str:
    """config.yaml as shipped: every key at its default, the schema's description above it.

    ``python -m episcribe.config > config.yaml`` regenerates it; a test keeps the two equal.
    """
    schema = schema or load_schema()
    lines = [
        "# episcribe configuration. Every key is shown at its default; the comment above a key",
        "# is its description from schemas/config.schema.yaml. On the command line, nested keys",
        "# are written with a double underscore (Snakemake refuses dots in --config keys):",
        "#   snakemake --cores all --config dataset__root=/data/my_dataset vqa__enabled=false",
        "",
    ]
    _render_section(schema["properties"], lines, indent="")
    return "\n".join(lines) + "\n"


def _render_section(properties: dict, lines: list[str], indent: str) -> None:
    for name, sub in properties.items():
        for text in textwrap.wrap(" ".join(sub.get("description", "").split()), 88 - len(indent)):
            lines.append(f"{indent}# {text}")
        if "properties" in sub:
            lines.append(f"{indent}{name}:")
            _render_section(sub["properties"], lines, indent + "  ")
            if not indent:
                lines.append("")
            continue
        value = yaml.safe_dump(sub.get("default"), default_flow_style=True).strip()
        value = value.removesuffix("\n...").removesuffix("...").strip()
        lines.append(f"{indent}{name}: {value}")
        if not indent:
            lines.append("")


if __name__ == "__main__":
    print(render_default_config(), end="")

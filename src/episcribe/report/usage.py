"""Model usage: the annotate jobs' call records, per module and call kind.

Each annotate job writes ``results/{dataset}/jobs/annotate_{module}/{shard}.metrics.jsonl``,
one JSON record per model call. At 10,000 twenty-second episodes that is ~500,000
records in ~8,000 files (~100 MB), so they are parsed by Arrow's JSON reader (only the
fields used) into columns and aggregated with numpy: ~1 s instead of ~5 s with a
``json.loads`` and a dict per record. A file Arrow cannot read (a torn last line, a
record of another shape) is read line by line, skipping what is not a record.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

USAGE_COLUMNS = (
    "module",
    "kind",
    "calls",
    "ok",
    "failed",
    "invalid",
    "retries",
    "reprompted",
    "prompt_tokens",
    "completion_tokens",
    "latency_p50_s",
    "latency_p90_s",
    "latency_p99_s",
    "latency_max_s",
)
_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("outcome", pa.string()),
        ("latency_s", pa.float64()),
        ("retries", pa.int64()),
        ("reprompted", pa.bool_()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
    ]
)
_NUMBERS = ("latency_s", "retries", "prompt_tokens", "completion_tokens")


@dataclass
class Calls:
    """Call records as columns (one entry per model call)."""

    module: np.ndarray  # str
    kind: np.ndarray  # str ("None" when the record has none)
    outcome: np.ndarray  # str
    latency_s: np.ndarray  # float
    retries: np.ndarray  # int
    reprompted: np.ndarray  # bool
    prompt_tokens: np.ndarray  # int
    completion_tokens: np.ndarray  # int

    def __len__(self) -> int:
        return len(self.module)

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> Calls:
        """From dicts with a ``module`` key (and the metrics fields, any missing)."""
        records = list(records)

        def num(key: str, kind=float) -> np.ndarray:
            return np.array([kind(r.get(key) or 0) for r in records], dtype=kind)

        return cls(
            module=np.array([str(r.get("module")) for r in records], dtype=object),
            kind=np.array([str(r.get("kind")) for r in records], dtype=object),
            outcome=np.array([str(r.get("outcome")) for r in records], dtype=object),
            latency_s=num("latency_s"),
            retries=num("retries", int),
            reprompted=np.array([bool(r.get("reprompted")) for r in records], dtype=bool),
            prompt_tokens=num("prompt_tokens", int),
            completion_tokens=num("completion_tokens", int),
        )

    @classmethod
    def concat(cls, parts: Sequence[Calls]) -> Calls:
        fields = cls.__dataclass_fields__
        if not parts:
            return cls.from_records([])
        return cls(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})


def _from_table(table: pa.Table, module: str) -> Calls:
    def col(name: str, fill):
        return table.column(name).fill_null(fill).to_numpy(zero_copy_only=False)

    n = table.num_rows
    kind = table.column("kind").to_pylist()
    return Calls(
        module=np.full(n, module, dtype=object),
        kind=np.array(["None" if k is None else k for k in kind], dtype=object),
        outcome=np.array(col("outcome", "None"), dtype=object),
        latency_s=col("latency_s", 0.0).astype(float),
        retries=col("retries", 0).astype(int),
        reprompted=col("reprompted", False).astype(bool),
        prompt_tokens=col("prompt_tokens", 0).astype(int),
        completion_tokens=col("completion_tokens", 0).astype(int),
    )


def _parse_fast(data: bytes, lines: int, module: str) -> Calls | None:
    """Arrow's reader over whole JSONL text; None unless every line is one record."""
    if not data.strip():
        return Calls.from_records([])
    options = pa_json.ParseOptions(explicit_schema=_SCHEMA, unexpected_field_behavior="ignore")
    try:
        table = pa_json.read_json(
            io.BytesIO(data),
            read_options=pa_json.ReadOptions(block_size=1 << 24),
            parse_options=options,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
        return None
    return _from_table(table, module) if table.num_rows == lines else None


def _parse_slow(text: str, module: str) -> Calls:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            numbers = (record.get(k) for k in _NUMBERS)
            if all(v is None or isinstance(v, int | float) for v in numbers):
                records.append({**record, "module": module})
    return Calls.from_records(records)


def _read(blobs: list[bytes], module: str) -> Calls:
    data = b"".join(b if b.endswith(b"\n") or not b else b + b"\n" for b in blobs)
    lines = data.count(b"\n{") + data.startswith(b"{")  # records, one a line
    fast = _parse_fast(data, lines, module)
    if fast is not None:
        return fast
    if len(blobs) > 1:  # find the files that spoil it; the others stay fast
        return Calls.concat([_read([b], module) for b in blobs])
    return _parse_slow(data.decode("utf-8", errors="replace"), module)


def read_metrics(paths: Iterable[str | os.PathLike]) -> Calls:
    """Every call record of these metrics files, with ``module`` taken from the rule dir.

    ``results/{dataset}/jobs/annotate_{module}/{shard}.metrics.jsonl``; missing files and
    unreadable lines are skipped.
    """
    by_module: dict[str, list[bytes]] = {}
    for path in paths:
        path = Path(path)
        if path.is_file():
            module = path.parent.name.removeprefix("annotate_")
            by_module.setdefault(module, []).append(path.read_bytes())
    return Calls.concat([_read(blobs, module) for module, blobs in by_module.items()])


def _codes(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Distinct strings and each value's index among them (hashed by Arrow, not sorted)."""
    encoded = pa.array(values, type=pa.string()).dictionary_encode()
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)


def _usage_row(module: str, kind: str, calls: Calls, mask: np.ndarray) -> dict:
    latencies = calls.latency_s[mask]
    n = len(latencies)
    ok = int((calls.outcome[mask] == "ok").sum())
    pct = np.percentile(latencies, [50, 90, 99]).tolist() if n else [0.0, 0.0, 0.0]
    return {
        "module": module,
        "kind": kind,
        "calls": n,
        "ok": ok,
        "failed": n - ok,
        "invalid": int((calls.outcome[mask] == "invalid").sum()),
        "retries": int(calls.retries[mask].sum()),
        "reprompted": int(calls.reprompted[mask].sum()),
        "prompt_tokens": int(calls.prompt_tokens[mask].sum()),
        "completion_tokens": int(calls.completion_tokens[mask].sum()),
        "latency_p50_s": round(pct[0], 3),
        "latency_p90_s": round(pct[1], 3),
        "latency_p99_s": round(pct[2], 3),
        "latency_max_s": round(float(latencies.max()), 3) if n else 0.0,
    }


def usage(calls: Calls | Iterable[Mapping], modules: Sequence[str] = ()) -> list[dict]:
    """One row per module (kind "all"), each followed by its rows per call kind.

    Every module in ``modules`` gets a row, with zero calls when it made none; a
    ``total`` row follows when there is more than one module.
    """
    if not isinstance(calls, Calls):
        calls = Calls.from_records(calls)
    module_names, module_codes = _codes(calls.module)
    kind_names, kind_codes = _codes(calls.kind)
    order = list(modules) + sorted(m for m in module_names if m not in modules)
    rows = []
    for module in order:
        if module in module_names:
            in_module = module_codes == module_names.index(module)
        else:
            in_module = np.zeros(len(calls), dtype=bool)
        rows.append(_usage_row(module, "all", calls, in_module))
        present = np.unique(kind_codes[in_module]).tolist()
        for kind, code in sorted((kind_names[c], c) for c in present):
            rows.append(_usage_row(module, kind, calls, in_module & (kind_codes == code)))
    if len(order) > 1:
        rows.append(_usage_row("total", "all", calls, np.ones(len(calls), dtype=bool)))
    return rows


def usage_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=USAGE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()

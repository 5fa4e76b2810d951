"""The run summary: validation result, rows per style, model usage (HTML and CSV).

Model usage is aggregated from the metrics files the annotate jobs leave beside their
logs (one JSON record per model call), per module and call kind.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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


def read_metrics(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Every call record of these metrics files, with ``module`` taken from the rule dir.

    ``logs/{dataset}/annotate_{module}/{shard}.metrics.jsonl``; missing files (jobs that
    made no call: everything came from the cache) and unreadable lines are skipped.
    """
    records = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            continue
        module = path.parent.name.removeprefix("annotate_")
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append({**record, "module": module})
    return records


def metrics_files(
    logs_dir: str | os.PathLike, modules: Iterable[str], episodes: Iterable[int]
) -> list[Path]:
    """The metrics files of the annotate jobs of these modules and episodes.

    ``{logs_dir}/annotate_{module}/{shard}.metrics.jsonl`` where shard is
    ``episode_000012`` or ``episodes_000000-000019``; files of shards whose first or last
    episode is not in ``episodes`` (left from an earlier run over others) are skipped.
    """
    wanted = set(int(e) for e in episodes)
    found = []
    for module in modules:
        for path in sorted(Path(logs_dir, f"annotate_{module}").glob("*.metrics.jsonl")):
            label = path.name.removesuffix(".metrics.jsonl")
            bounds = label.split("_", 1)[-1].split("-")
            try:
                first, last = int(bounds[0]), int(bounds[-1])
            except ValueError:
                continue
            if first in wanted and last in wanted:
                found.append(path)
    return found


def _usage_row(module: str, kind: str, records: list[dict]) -> dict:
    latencies = np.array([float(r.get("latency_s") or 0.0) for r in records])
    outcomes = Counter(r.get("outcome") for r in records)
    pct = np.percentile(latencies, [50, 90, 99]).tolist() if len(latencies) else [0.0, 0.0, 0.0]
    return {
        "module": module,
        "kind": kind,
        "calls": len(records),
        "ok": outcomes.get("ok", 0),
        "failed": len(records) - outcomes.get("ok", 0),
        "invalid": outcomes.get("invalid", 0),
        "retries": sum(int(r.get("retries") or 0) for r in records),
        "reprompted": sum(bool(r.get("reprompted")) for r in records),
        "prompt_tokens": sum(int(r.get("prompt_tokens") or 0) for r in records),
        "completion_tokens": sum(int(r.get("completion_tokens") or 0) for r in records),
        "latency_p50_s": round(pct[0], 3),
        "latency_p90_s": round(pct[1], 3),
        "latency_p99_s": round(pct[2], 3),
        "latency_max_s": round(float(latencies.max()), 3) if len(latencies) else 0.0,
    }


def usage(records: Sequence[dict], modules: Sequence[str] = ()) -> list[dict]:
    """One row per module (kind "all"), each followed by its rows per call kind.

    Every module in ``modules`` gets a row, with zero calls when it made none.
    """
    by_module: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_module[record["module"]].append(record)
    order = list(modules) + sorted(m for m in by_module if m not in modules)
    rows = []
    for module in order:
        recs = by_module.get(module, [])
        rows.append(_usage_row(module, "all", recs))
        by_kind: dict[str, list[dict]] = defaultdict(list)
        for r in recs:
            by_kind[str(r.get("kind"))].append(r)
        rows += [_usage_row(module, kind, by_kind[kind]) for kind in sorted(by_kind)]
    if len(order) > 1:
        rows.append(_usage_row("total", "all", list(records)))
    return rows


def usage_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=USAGE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# -- the summary page ----------------------------------------------------------------
CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#212529;
margin:24px;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px}
.muted{color:#6c757d}.ok{color:#198754;font-weight:600}.bad{color:#c81e2d;font-weight:600}
.warn{color:#b7791f;font-weight:600}
table{border-collapse:collapse;margin:4px 0}th,td{padding:4px 10px;border-bottom:1px solid #dee2e6}
th{background:#f1f3f5;text-align:left;font-weight:600}td.n{text-align:right;
font-variant-numeric:tabular-nums}tr.module td{font-weight:600;background:#fafbfc}
tr.kind td:first-child{padding-left:26px;color:#6c757d}code{font-size:12px}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="n">{value:.3f}</td>'
    if isinstance(value, int):
        return f'<td class="n">{value:,}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def summary_html(
    *,
    dataset: str,
    episodes: Sequence[int],
    shown: Sequence[int],
    overlaid: Sequence[int] | None = None,
    modules: Sequence[str],
    model: Mapping[str, Any],
    validation: Mapping[str, Any] | None,
    usage_rows: Sequence[dict],
    seconds: float | None = None,
) -> str:
    """A self-contained HTML page (inline CSS, no scripts) for the report's Summary."""
    e = html.escape
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>episcribe run summary</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>episcribe · {e(dataset)}</h1>",
        f"<div class='muted'>{len(episodes)} episodes · modules: {e(', '.join(modules))} · "
        f"model: <code>{e(str(model.get('model_id', '?')))}</code> · "
        f"frames camera: <code>{e(str(model.get('camera_key', '?')))}</code></div>",
    ]
    if len(shown) < len(episodes):
        out.append(
            f"<p class='warn'>Timelines are drawn for {len(shown)} evenly spaced episodes of "
            f"{len(episodes)}.</p>"
        )
    if overlaid is not None and len(overlaid) == len(episodes):
        out.append("<p class='muted'>VQA overlays are drawn for every episode.</p>")
    elif overlaid is not None:
        listed = ", ".join(str(i) for i in overlaid[:20]) + (" …" if len(overlaid) > 20 else "")
        out.append(
            f"<p class='muted'>VQA overlays are drawn for {len(overlaid)} evenly spaced "
            f"episode{'' if len(overlaid) == 1 else 's'} of {len(episodes)}"
            f"{': ' + listed if overlaid else ''}.</p>"
        )
    out.append("<h2>Validation</h2>")
    if validation is None:
        out.append("<p class='muted'>No validation report.</p>")
    else:
        status = "ok" if validation.get("ok") else "bad"
        out.append(
            f"<p><span class='{status}'>{'PASSED' if validation.get('ok') else 'FAILED'}</span>"
            f" — {validation.get('episodes_checked', 0)} episodes checked, "
            f"{validation.get('errors', 0)} errors, {validation.get('warnings', 0)} warnings</p>"
        )
        problems = validation.get("problems") or []
        if problems:
            out.append(
                "<table><tr><th>severity</th><th>episode</th><th>module</th>"
                "<th>t (s)</th><th>problem</th></tr>"
            )
            for p in problems[:50]:
                t = p.get("timestamp")
                out.append(
                    "<tr>"
                    + _cell(str(p.get("severity")))
                    + _cell(str(p.get("episode")))
                    + _cell(str(p.get("module") or ""))
                    + _cell("" if t is None else f"{t:.3f}")
                    + _cell(str(p.get("message")))
                    + "</tr>"
                )
            out.append("</table>")
            if len(problems) > 50:
                out.append(
                    f"<p class='muted'>… and {len(problems) - 50} more in the "
                    "validation report.</p>"
                )
        counts = validation.get("rows_per_style") or {}
        out.append(
            "<h2>Rows per style</h2><table><tr><th>style</th><th>rows</th><th>per episode</th></tr>"
        )
        n_ep = max(1, int(validation.get("episodes_checked") or 1))
        for style, count in sorted(counts.items()):
            name = "speech (say tool call)" if style == "null" else style
            out.append(f"<tr>{_cell(name)}{_cell(int(count))}{_cell(count / n_ep)}</tr>")
        out.append(
            f"<tr class='module'>{_cell('all')}{_cell(sum(counts.values()))}"
            f"{_cell(sum(counts.values()) / n_ep)}</tr></table>"
        )

    out.append("<h2>Model usage</h2>")
    out.append(
        "<p class='muted'>Calls made by the annotation jobs that last ran (episodes restored "
        "from the cache made none). Failed = no usable answer after retries and one "
        "re-prompt; latency is per call, retries included.</p>"
    )
    heads = [
        "module / call kind",
        "calls",
        "ok",
        "failed",
        "invalid",
        "retries",
        "re-prompted",
        "prompt tokens",
        "completion tokens",
        "p50 s",
        "p90 s",
        "p99 s",
        "max s",
    ]
    out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")
    for row in usage_rows:
        is_module = row["kind"] == "all"
        name = row["module"] if is_module else row["kind"]
        cls = "module" if is_module else "kind"
        failed = row["failed"]
        cells = [_cell(name)] + [_cell(row[k]) for k in USAGE_COLUMNS[2:]]
        if not row["calls"]:
            cells[-4:] = ['<td class="n muted">–</td>'] * 4
        if failed:
            cells[3] = f'<td class="n bad">{failed:,}</td>'
        out.append(f"<tr class='{cls}'>" + "".join(cells) + "</tr>")
    out.append("</table>")
    if seconds is not None:
        out.append(f"<p class='muted'>Rendered in {seconds:.1f} s.</p>")
    out.append("</body></html>\n")
    return "\n".join(out)

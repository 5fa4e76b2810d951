"""The run summary page: validation result, rows per style, model usage.

A self-contained HTML page (inline CSS, no scripts); the usage rows come from
:mod:`.usage`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from episcribe.report.usage import USAGE_COLUMNS

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
    if "fake" in model:  # model_identity carries the fake server's options, and only then
        out.insert(
            3,
            "<p class='bad'><b>Fake annotations.</b> This run used the bundled fake model "
            "server (vlm.backend: fake): its rows are placeholders for demos and tests, not "
            "what a model saw. Do not train on them.</p>",
        )
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

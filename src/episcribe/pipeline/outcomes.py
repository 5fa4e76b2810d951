"""What the annotate jobs did with the model, so that no loss goes unreported.

Each annotate job saves a :class:`JobSummary` as a declared output
(``results/{dataset}/jobs/annotate_{module}/{shard}.summary.json``): episodes from the cache,
episodes annotated, model calls, failed calls, skipped answers, and the episodes left
incomplete (staged with failed calls, not cached; ``cache.record_delivery``). A job that
is not re-run keeps the summary of the run that made its staging files, so the totals
describe the annotations the dataset gets. The validation report and the console's
end-of-run summary show them per module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from episcribe.atomic import write_json
from episcribe.errors import UserError

TOTALS = ("calls", "failures", "truncated", "skipped", "cached", "annotated")


@dataclass
class JobSummary:
    module: str = ""
    cached: int = 0
    annotated: int = 0
    rows: int = 0
    skipped: int = 0  # answers missing, empty or unusable (a failed call included)
    calls: int = 0
    failures: int = 0  # calls with no usable answer after retries and a re-prompt
    truncated: int = 0  # of those, answers cut at their token budget (finish_reason length)
    incomplete: list[int] = field(default_factory=list)  # staged, not cached: re-asked
    seconds: float = 0.0

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, asdict(self))


def check_failures(summary: JobSummary, max_share: float) -> None:
    """Stop the run when too many of a job's calls failed (its finished episodes are
    already staged and cached): the model server is likely down, overloaded or refusing."""
    if not summary.calls or summary.failures <= max_share * summary.calls:
        return
    finished = summary.cached + summary.annotated - len(summary.incomplete)
    raise UserError(
        f"{summary.module}: {summary.failures} of {summary.calls} model calls failed "
        f"({summary.failures / summary.calls:.0%}, more than vlm.max_failed_call_share="
        f"{max_share}). The {finished} finished episodes are cached; the next run asks the "
        f"model only for the {len(summary.incomplete)} others. The job's log says why the "
        "calls failed (endpoint down, timeouts, requests the model cannot take)"
    )


def module_totals(summary_paths: Iterable[str | os.PathLike]) -> dict[str, dict]:
    """Module -> summed calls, failures, skipped answers, cached and annotated episodes,
    and the incomplete episodes, over the jobs' saved summaries (missing files skipped)."""
    known = {f.name for f in fields(JobSummary)}
    totals: dict[str, dict] = {}
    for path in summary_paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        job = JobSummary(**{k: v for k, v in data.items() if k in known})
        entry = totals.setdefault(job.module, {k: 0 for k in TOTALS} | {"incomplete": []})
        for key in TOTALS:
            entry[key] += getattr(job, key)
        entry["incomplete"] = sorted(entry["incomplete"] + job.incomplete)
    return dict(sorted(totals.items()))


def end_of_run_lines(report: dict) -> list[str]:
    """The console's summary of a finished run, from the validation report's JSON."""
    rows = report.get("rows_per_style", {})
    styles = ", ".join(f"{style} {n}" for style, n in rows.items())
    lines = [
        f"episcribe: {report['episodes_checked']} episodes, {sum(rows.values())} rows "
        f"({styles}); validation {'OK' if report['ok'] else 'FAILED'} with "
        f"{report['errors']} errors, {report['warnings']} warnings"
    ]
    reviewed = report.get("reviewed_episodes") or []
    if reviewed:
        episodes = "episode" if len(reviewed) == 1 else "episodes"
        lines.append(f"  {len(reviewed)} {episodes} kept from review (a person's corrections)")
    for module, m in report.get("model_calls", {}).items():
        line = (
            f"  {module}: {m['calls']} model calls, {m['failures']} failed "
            f"({m.get('truncated', 0)} cut at their token budget), {m['skipped']} answers skipped"
        )
        if m["incomplete"]:
            line += f"; incomplete episodes {m['incomplete']}, asked again by the next run"
        lines.append(line)
    return lines

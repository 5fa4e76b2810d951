"""What a run cost in the benchmark's unit: model calls and tokens per hour of video.

Read from the annotate jobs' own call records (``results/<dataset>/jobs/annotate_<module>/
*.metrics.jsonl``, one line per call with the server's usage): prompt tokens less the
ones the server served from its prefix cache (``cached_tokens``), and completion tokens.
Only the jobs that last ran are counted: episodes restored from the cache made no call.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from episcribe.pipeline.layout import jobs_root

FIELDS = ("calls", "prompt_tokens", "uncached_prompt_tokens", "completion_tokens")


def run_cost(results_dir: Path, video_seconds: float) -> dict | None:
    """Totals and per-video-hour rates per module and overall; None without records."""
    jobs = jobs_root(results_dir)
    files = sorted(jobs.glob("annotate_*/*.metrics.jsonl"))
    if not files:
        return None
    modules: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))
    for path in files:
        module = path.parent.name.removeprefix("annotate_")
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed job
            if not isinstance(record, dict):
                continue
            prompt = int(record.get("prompt_tokens") or 0)
            totals = modules[module]
            totals["calls"] += 1
            totals["prompt_tokens"] += prompt
            totals["uncached_prompt_tokens"] += prompt - int(record.get("cached_tokens") or 0)
            totals["completion_tokens"] += int(record.get("completion_tokens") or 0)
    overall = {k: sum(m[k] for m in modules.values()) for k in FIELDS}
    hours = video_seconds / 3600
    return {
        "jobs": str(jobs),
        "video_hours": hours,
        "total": overall,
        "per_video_hour": {k: (v / hours if hours else None) for k, v in overall.items()},
        "modules": dict(sorted(modules.items())),
    }

"""Where every file of a run lives: the one path layout the rules, scripts and command use.

All paths are relative to the working directory (a run's outputs move with it):

    results/{dataset}/staging/episode_{N:06d}/{module}.jsonl   one module, one episode
    results/{dataset}/cache/{module}/...                       rows keyed by their inputs
    results/{dataset}/jobs/annotate_{module}/{shard}.summary.json   what a job did
    results/{dataset}/jobs/annotate_{module}/{shard}.metrics.jsonl  one line per model call
    results/{dataset}/review/episode_{N:06d}.jsonl (+ .json)   a person's corrections and
                                                               review state (episcribe review)
    results/{dataset}/review/gold.jsonl                        reviewed subtasks (eval --gold)
    results/{dataset}/validation/report.{json,txt}             checks before writing
    results/{dataset}/write/manifest.json                      what write_dataset wrote
    results/{dataset}/annotated/                               the annotated dataset
    results/{dataset}/push/receipt.json                        what push_dataset uploaded
    results/{dataset}/report/{timelines,vqa,summary.html,usage.csv}
    logs/{dataset}/{rule}/{shard or rule}.log                  one log per job
    benchmarks/{dataset}/{rule}/{shard or rule}.tsv            one timing per job
    .episcribe/server/                                         the model server's state

{shard} is ``episode_000012`` or ``episodes_000000-000031`` (``Shard.label``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SERVER_RUN_DIR = Path(".episcribe") / "server"


def jobs_root(results: Path) -> Path:
    """Where the annotate jobs of the run at ``results`` (results/{dataset}) keep their
    summaries and metrics, one folder per module."""
    return Path(results) / "jobs"


@dataclass(frozen=True)
class Layout:
    dataset: str

    @property
    def results(self) -> Path:
        return Path("results") / self.dataset

    @property
    def staging(self) -> Path:
        return self.results / "staging"

    @property
    def review(self) -> Path:
        """The review server's files: never a job's output, so no run deletes them."""
        return self.results / "review"

    @property
    def cache(self) -> Path:
        return self.results / "cache"

    def jobs(self, module: str) -> Path:
        """The annotate jobs' summaries and metrics of one module."""
        return jobs_root(self.results) / f"annotate_{module}"

    def job_summary(self, module: str, shard_label: str) -> str:
        return str(self.jobs(module) / f"{shard_label}.summary.json")

    def job_metrics(self, module: str, shard_label: str) -> str:
        return str(self.jobs(module) / f"{shard_label}.metrics.jsonl")

    @property
    def validation_json(self) -> str:
        return str(self.results / "validation" / "report.json")

    @property
    def validation_txt(self) -> str:
        return str(self.results / "validation" / "report.txt")

    @property
    def write_manifest(self) -> str:
        return str(self.results / "write" / "manifest.json")

    @property
    def annotated(self) -> Path:
        """The annotated dataset's default place (output.root overrides it)."""
        return self.results / "annotated"

    @property
    def push_receipt(self) -> str:
        return str(self.results / "push" / "receipt.json")

    @property
    def report(self) -> Path:
        return self.results / "report"

    @property
    def timelines(self) -> str:
        return str(self.report / "timelines")

    @property
    def vqa_overlays(self) -> str:
        return str(self.report / "vqa")

    @property
    def summary_html(self) -> str:
        return str(self.report / "summary.html")

    @property
    def usage_csv(self) -> str:
        return str(self.report / "usage.csv")

    def log(self, rule: str, label: str | None = None) -> str:
        return str(Path("logs") / self.dataset / rule / f"{label or rule}.log")

    def benchmark(self, rule: str, label: str | None = None) -> str:
        return str(Path("benchmarks") / self.dataset / rule / f"{label or rule}.tsv")

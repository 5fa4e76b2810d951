"""Entry point of the summarize_run rule: summary.html and usage.csv."""

import json
from pathlib import Path

from episcribe.pipeline.logs import script_main
from episcribe.report.build import summarize_run


def main(smk):
    p = smk.params
    episodes = json.loads(Path(smk.input.validation).read_text())["episodes"]
    summarize_run(
        dataset_name=p.dataset_name,
        episodes=episodes,
        modules=list(p.modules),
        model=dict(p.model),
        metrics_paths=list(smk.input.metrics),
        validation_json=smk.input.validation,
        summary_path=smk.output.summary,
        usage_path=smk.output.usage,
    )


script_main(snakemake, main)  # noqa: F821 (injected by Snakemake)

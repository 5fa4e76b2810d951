"""Entry point of the render_report rule: timelines, VQA overlays and the run summary."""

import json
from pathlib import Path

from episcribe.logs import script_main
from episcribe.report import build_report, metrics_files


def main(smk):
    p = smk.params
    episodes = json.loads(Path(smk.input.validation).read_text())["episodes"]
    build_report(
        dataset_root=p.dataset_root,
        dataset_name=p.dataset_name,
        staging_dir=p.staging_dir,
        episodes=episodes,
        modules=list(p.modules),
        model=dict(p.model),
        metrics_paths=metrics_files(p.logs_dir, p.modules, episodes),
        validation_json=smk.input.validation,
        timelines_dir=smk.output.timelines,
        overlays_dir=smk.output.overlays,
        summary_path=smk.output.summary,
        usage_path=smk.output.usage,
    )


script_main(snakemake, main)  # noqa: F821 (injected by Snakemake)

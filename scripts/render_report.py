"""Entry point of the render_report rule: timelines and VQA overlays, from staging files."""

from episcribe.pipeline.logs import script_main
from episcribe.pipeline.staging import staging_dir_of
from episcribe.report.build import render_images


def main(smk):
    p = smk.params
    render_images(
        dataset_root=p.dataset_root,
        staging_dir=staging_dir_of(smk.input[0]),
        episodes=list(p.episodes),
        modules=list(p.modules),
        model=dict(p.model),
        timelines_dir=smk.output.timelines,
        overlays_dir=smk.output.overlays,
        review_dir=p.review_dir,
    )


script_main(snakemake, main)  # noqa: F821 (injected by Snakemake)

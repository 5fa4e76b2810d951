"""Entry point of every annotate_<module> job: one module over one shard of episodes."""

from pathlib import Path

from episcribe.modules.prompts import prompts_root
from episcribe.modules.registry import server_settings
from episcribe.pipeline.annotate import JobSpec, run_job
from episcribe.pipeline.layout import SERVER_RUN_DIR
from episcribe.pipeline.logs import script_main
from episcribe.pipeline.staging import staging_dir_of


def main(smk):
    p = smk.params
    run_job(
        JobSpec(
            module=p.module,
            dataset_root=Path(p.dataset_root),
            episodes=list(p.episodes),
            staging_dir=staging_dir_of(smk.output[0]),
            cache_dir=Path(p.cache_dir),
            # The prompt files are the job's inputs; where the checkout lives is no param.
            # (A module that asks no model has none and reads none.)
            prompts_dir=prompts_root(smk.input.prompts[0]) if smk.input.prompts else Path(),
            settings=dict(p.settings),
            model=dict(p.model),
            seed=p.seed,
            vlm=server_settings(smk.config),
            run_dir=SERVER_RUN_DIR,
            upstream_modules=list(p.upstream_modules),
            episode_concurrency=smk.config["workflow"]["episode_concurrency"],
            metrics_path=Path(smk.output.metrics),
            summary_path=Path(smk.output.summary),
        )
    )


script_main(snakemake, main)  # noqa: F821 (injected by Snakemake)

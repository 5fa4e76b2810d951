"""Entry point of validate_staging: check all staging files, write the report."""

from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.pipeline.logs import script_main
from episcribe.pipeline.staging import staging_dir_of
from episcribe.pipeline.validation import validate_staging


def main(smk):
    p = smk.params
    dataset = LeRobotDataset.open(p.dataset_root, p.episodes)
    report = validate_staging(
        dataset,
        staging_dir_of(smk.input[0]),
        list(p.episodes),
        list(p.modules),
        cache_dir=p.cache_dir,
        job_summaries=[path for path in smk.input if path.endswith(".summary.json")],
        review_dir=p.review_dir,
    )
    report.write(smk.output.json, smk.output.txt)


script_main(snakemake, main)  # noqa: F821 (injected by Snakemake)

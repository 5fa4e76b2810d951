"""Entry point of validate_staging: check all staging files, write the report."""

from episcribe.dataset import LeRobotDataset
from episcribe.logs import script_main
from episcribe.validation import validate_staging


def main(smk):
    p = smk.params
    dataset = LeRobotDataset.open(p.dataset_root)
    report = validate_staging(dataset, p.staging_dir, list(p.episodes), list(p.modules))
    report.write(smk.output.json, smk.output.txt)


script_main(snakemake, main)  # noqa: F821 (injected by Snakemake)

"""Entry point of write_dataset: refuse on validation errors, else write the dataset."""

from pathlib import Path

from episcribe.dataset import LeRobotDataset
from episcribe.logs import script_main
from episcribe.writer import check_report, write_annotated


def main(smk):
    p = smk.params
    check_report(Path(smk.input.report), skip_validation=p.skip_validation)
    dataset = LeRobotDataset.open(p.dataset_root)
    destination = Path(p.destination) if p.destination else None
    write_annotated(
        dataset, Path(p.staging_dir), list(p.episodes), list(p.modules), destination,
        manifest_path=Path(smk.output.manifest),
    )


script_main(snakemake, main)  # noqa: F821 (injected by Snakemake)

"""Entry point of write_dataset: refuse on validation errors, else write the dataset."""

from episcribe.atomic import write_json
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.lerobot.writer import write_annotated
from episcribe.pipeline.logs import script_main
from episcribe.pipeline.validation import check_report


def main(smk):
    p = smk.params
    check_report(smk.input.report, skip_validation=p.skip_validation)
    dataset = LeRobotDataset.open(p.dataset_root, p.episodes)
    manifest = write_annotated(
        dataset,
        p.staging_dir,
        list(p.episodes),
        list(p.modules),
        p.destination,
        provenance=dict(p.provenance),
        review_dir=p.review_dir,
    )
    write_json(smk.output.manifest, manifest)


script_main(snakemake, main)  # noqa: F821 (injected by Snakemake)

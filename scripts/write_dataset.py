"""Entry point of write_dataset: refuse on validation errors, else write the dataset."""

from episcribe.atomic import write_json
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.lerobot.writer import write_annotated
from episcribe.pipeline.logs import script_main
from episcribe.pipeline.staging import rows_from
from episcribe.pipeline.validation import check_report


def main(smk):
    p = smk.params
    check_report(smk.input.report, skip_validation=p.skip_validation)
    dataset = LeRobotDataset.open(p.dataset_root, p.episodes)
    modules = list(p.modules)
    manifest = write_annotated(
        dataset,
        rows_from(p.staging_dir, modules, p.review_dir),
        list(p.episodes),
        modules,
        p.destination,
        provenance=dict(p.provenance),
    )
    write_json(smk.output.manifest, manifest)


script_main(snakemake, main)  # noqa: F821 (injected by Snakemake)

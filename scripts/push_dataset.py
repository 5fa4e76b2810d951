"""Entry point of push_dataset: write the dataset card, upload and tag, keep the receipt."""

import sys

from episcribe.atomic import write_json
from episcribe.lerobot.hub import dataset_card, push_dataset
from episcribe.pipeline.logs import script_main


def main(smk):
    p = smk.params
    card = dataset_card(**p.card, prompts=list(smk.input.prompts))
    receipt = push_dataset(
        p.folder, p.repo_id, private=p.private, commit_message=p.commit_message, card=card
    )
    write_json(smk.output.receipt, receipt)
    print(
        f"episcribe: pushed {receipt['repo_id']} (commit {receipt['commit'][:12]}); tag "
        f"{receipt['tag']} points at it, so LeRobotDataset({receipt['repo_id']!r}) loads it",
        file=sys.stderr,
    )


script_main(snakemake, main)  # noqa: F821 (injected by Snakemake)

"""write_dataset: write the language columns into the dataset.

Inputs: the validation report (and through it, every staging file).
Outputs: results/{dataset}/write/manifest.json, the receipt of what was written. The
annotated dataset itself is user data, not a workflow file: its location (output.root,
default results/{dataset}/annotated, or the source with output.in_place) is a param.
"""


rule write_dataset:
    input:
        report=rules.validate_staging.output.json,
    output:
        manifest=PATHS.write_manifest,
    log:
        PATHS.log("write_dataset"),
    benchmark:
        PATHS.benchmark("write_dataset")
    # Before the report's summary when both are ready: the annotated dataset is what the
    # user waits for.
    priority: 1
    conda:
        "../envs/dataset.yaml"
    params:
        dataset_root=str(PLAN.dataset.root),
        staging_dir=str(PATHS.staging),
        episodes=PLAN.episodes,
        modules=PLAN.modules,
        destination=PLAN.destination(),
        skip_validation=config["skip_validation"],
        provenance=PLAN.provenance(),
        review_dir=PLAN.review_dir(),
    script:
        "../scripts/write_dataset.py"

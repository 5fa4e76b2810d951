"""validate_staging: check every staging file before anything is written.

Inputs: the staging files of every enabled module and episode.
Outputs: results/{dataset}/validation/report.json and report.txt (always written; the
write_dataset rule refuses to write when the report has errors, unless skip_validation).
"""


rule validate_staging:
    input:
        staging=PLAN.all_staging(),
    output:
        json=report(
            f"results/{DATASET}/validation/report.json",
            caption="../report/validation.rst",
            category="Validation",
        ),
        txt=f"results/{DATASET}/validation/report.txt",
    params:
        dataset_root=str(PLAN.dataset.root),
        staging_dir=str(PLAN.staging_dir),
        episodes=PLAN.episodes,
        modules=PLAN.modules,
    log:
        PLAN.log("validate_staging"),
    benchmark:
        PLAN.benchmark("validate_staging")
    script:
        "../scripts/validate_staging.py"

"""validate_staging: check every staging file before anything is written.

Inputs: the staging files of every enabled module and episode, and every annotate job's
summary (what it did with the model) and metrics; the review files of the episodes a
person corrected (episcribe review), listed when snakemake starts.
Outputs: results/{dataset}/validation/report.json and report.txt (always written; the
write_dataset rule refuses to write when the report has errors, unless skip_validation).
"""


rule validate_staging:
    input:
        # Every staging file, as the outputs of the annotate rules that write them: with a
        # rules.<rule>.output reference Snakemake knows each file's producer, instead of
        # matching each of the 40,000 paths (at 10,000 episodes) against the outputs of
        # every rule while it builds the DAG, which cost seconds of every start.
        # Unnamed on purpose: for a named list, Snakemake looks each file's reference up
        # by the whole list (Rule.expand_input hashes the Namedlist once per file, so the
        # DAG build turns quadratic) and then does not find it.
        annotate_outputs(),
        # A person's corrections: no rule writes them, so a re-run keeps them, and a saved
        # correction (a newer or new file) re-runs this job and, after it, the write.
        review=PLAN.review_files(),
    output:
        json=report(
            PATHS.validation_json,
            caption="../report/validation.rst",
            category="Validation",
        ),
        txt=PATHS.validation_txt,
    log:
        PATHS.log("validate_staging"),
    benchmark:
        PATHS.benchmark("validate_staging")
    conda:
        "../envs/dataset.yaml"
    params:
        dataset_root=str(PLAN.dataset.root),
        episodes=PLAN.episodes,
        modules=PLAN.modules,
        # Also read (not declared): the cache's records of incomplete episodes.
        cache_dir=str(PATHS.cache),
        review_dir=PLAN.review_dir(),
    script:
        "../scripts/validate_staging.py"

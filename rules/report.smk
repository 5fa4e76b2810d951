"""render_report: what `snakemake --report report.html` shows, rendered in one job.

Inputs: every staging file and the validation report. The model-usage metrics that the
annotate jobs leave beside their logs (logs/{dataset}/annotate_{module}/{shard}.metrics.jsonl)
are read if present, but are not inputs: a job whose episodes all came from the cache
writes none.
Outputs, all under results/{dataset}/report/ and flagged for the HTML report:
  timelines/episode_{N:06d}.png             one per episode (category Timelines)
  vqa/episode_{N:06d}__{camera}.jpg         VQA overlays per episode and camera
  summary.html, usage.csv                   validation, rows per style, model usage
Episodes render on a thread pool (frames are decoded by seeking, so this is cheap).
"""


rule render_report:
    input:
        staging=PLAN.all_staging(),
        # A plain path: a rules.validate_staging.output reference beside 40,000 staging
        # inputs makes the DAG build quadratic (see final_outputs in common.smk).
        validation=f"results/{DATASET}/validation/report.json",
    output:
        timelines=report(
            directory(f"results/{DATASET}/report/timelines"),
            patterns=["episode_{episode}.png"],
            caption="../report/timeline.rst",
            category="Timelines",
            labels={"episode": "{episode}"},
        ),
        overlays=report(
            directory(f"results/{DATASET}/report/vqa"),
            patterns=["episode_{episode}__{camera}.jpg"],
            caption="../report/vqa_overlays.rst",
            category="VQA overlays",
            subcategory="{camera}",
            labels={"episode": "{episode}", "camera": "{camera}"},
        ),
        summary=report(
            f"results/{DATASET}/report/summary.html",
            caption="../report/summary.rst",
            category="Summary",
            labels={"file": "run summary"},
        ),
        usage=report(
            f"results/{DATASET}/report/usage.csv",
            caption="../report/usage.rst",
            category="Summary",
            labels={"file": "model usage (CSV)"},
        ),
    params:
        dataset_root=str(PLAN.dataset.root),
        dataset_name=DATASET,
        staging_dir=str(PLAN.staging_dir),
        modules=PLAN.modules,
        model=PLAN.model,
        # Small params only: the report repeats a job's params beside every file it shows.
        # The episodes are those of the validation report; the metrics files are found
        # below logs_dir (annotate_{module}/{shard}.metrics.jsonl).
        logs_dir=str(Path("logs") / DATASET),
    threads: 8  # capped by --cores
    log:
        PLAN.log("render_report"),
    benchmark:
        PLAN.benchmark("render_report")
    script:
        "../scripts/render_report.py"

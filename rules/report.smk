"""render_report: what `snakemake --report report.html` shows, rendered in one job.

Input: the validation report only. It depends on every staging file, so a changed
staging file re-runs validate_staging, whose new report.json re-renders the report;
listing the staging files here again would only make snakemake check 40,000 more paths
at 10,000 episodes. The staging files are read (not declared), as are the model-usage
metrics the annotate jobs leave beside their logs
(logs/{dataset}/annotate_{module}/{shard}.metrics.jsonl; a job whose episodes all came
from the cache writes none).
Outputs, all under results/{dataset}/report/ and flagged for the HTML report:
  timelines/episode_{N:06d}.png             up to 64 evenly spaced episodes (Timelines)
  vqa/episode_{N:06d}__{camera}.jpg         VQA overlays of 4 of those episodes, per camera
  summary.html, usage.csv                   validation, rows per style, model usage
The cost is bounded at any dataset size (1.5 CPU-s for 32 episodes, ~4 at 10,000;
see episcribe.report.build).
"""


rule render_report:
    input:
        # A plain path, as in final_outputs (common.smk).
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
    # One core: rendering is GIL-bound, and write_dataset can run beside it.
    threads: 1
    log:
        PLAN.log("render_report"),
    benchmark:
        PLAN.benchmark("render_report")
    script:
        "../scripts/render_report.py"

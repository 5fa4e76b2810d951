"""The report: what `snakemake --report report.html` shows, in two jobs.

render_report: the images, from the staging files alone, so that they render beside
validate_staging rather than after it (the images are most of the report's cost).
  Input: every staging file, as validate_staging lists them.
  Outputs, under results/{dataset}/report/, flagged for the HTML report:
    timelines/episode_{N:06d}.png           up to 64 evenly spaced episodes (Timelines)
    vqa/episode_{N:06d}__{camera}.jpg       VQA overlays of 4 of those episodes, per camera
  ~1.5 CPU-s for 32 episodes, ~3 at 10,000 (capped; see episcribe.report.build).

summarize_run: the run summary, from the validation report and the model-usage metrics
  of the current annotate jobs (results/{dataset}/jobs/annotate_{module}/{shard}.metrics.jsonl;
  empty for a job whose episodes all came from the cache). Which episodes have images it
  computes as render_report does (report_episodes), so it does not wait for them.
  Outputs: results/{dataset}/report/summary.html, usage.csv (Summary).
  ~0.5 CPU-s for 32 episodes, ~2 at 10,000 (the metrics of ~500,000 calls).
"""

from episcribe.report.build import sample_episodes


rule render_report:
    input:
        # Every staging file, named exactly as validate_staging names them and unnamed for
        # the same reason (see validate.smk): rules.<rule>.output references.
        annotate_outputs(),
        review=PLAN.review_files(),
    output:
        timelines=report(
            directory(PATHS.timelines),
            patterns=["episode_{episode}.png"],
            caption="../report/timeline.rst",
            category="Timelines",
            labels={"episode": "{episode}"},
        ),
        overlays=report(
            directory(PATHS.vqa_overlays),
            patterns=["episode_{episode}__{camera}.jpg"],
            caption="../report/vqa_overlays.rst",
            category="VQA overlays",
            subcategory="{camera}",
            labels={"episode": "{episode}", "camera": "{camera}"},
        ),
    log:
        PATHS.log("render_report"),
    benchmark:
        PATHS.benchmark("render_report")
    conda:
        "../envs/report.yaml"
    # One core: rendering is GIL-bound, and validate_staging (then write_dataset and
    # summarize_run) runs beside it.
    threads: 1
    params:
        dataset_root=str(PLAN.dataset.root),
        # Small params only: the report repeats a job's params beside every file it shows.
        # The plan's episodes that get a timeline (at most 64), not all of them.
        episodes=sample_episodes(PLAN.episodes),
        modules=PLAN.modules,
        model=PLAN.model,
        review_dir=PLAN.review_dir(),
    script:
        "../scripts/render_report.py"


rule summarize_run:
    input:
        # A plain path, as in final_outputs (common.smk). The episodes are the report's.
        validation=PATHS.validation_json,
        metrics=PLAN.all_job_files("metrics"),
    output:
        summary=report(
            PATHS.summary_html,
            caption="../report/summary.rst",
            category="Summary",
            labels={"file": "run summary"},
        ),
        usage=report(
            PATHS.usage_csv,
            caption="../report/usage.rst",
            category="Summary",
            labels={"file": "model usage (CSV)"},
        ),
    log:
        PATHS.log("summarize_run"),
    benchmark:
        PATHS.benchmark("summarize_run")
    conda:
        "../envs/report.yaml"
    threads: 1
    params:
        dataset_name=PLAN.name,
        modules=PLAN.modules,
        model=PLAN.model,
    script:
        "../scripts/summarize_run.py"

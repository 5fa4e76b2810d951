"""Shared set-up: validated config, the dataset's episodes, shards, paths and params.

All logic lives in episcribe.pipeline.workflow.WorkflowPlan, and every path in its layout
(PATHS, episcribe.pipeline.layout); this file only exposes them to the rule files as small
named helpers.
"""

import json
import os
import sys
import threading
from pathlib import Path

from episcribe.config import resolve
from episcribe.errors import UserError
from episcribe.pipeline.outcomes import end_of_run_lines
from episcribe.modules.registry import MODULES as MODULE_SPECS
from episcribe.command.stopping import guard_sigterm
from episcribe.vlm import server
from episcribe.pipeline.layout import SERVER_RUN_DIR
from episcribe.pipeline.workflow import WorkflowPlan, fetch_dataset, prompts_dir

# Jobs started by this snakemake share one model server; it watches the main snakemake
# process and stops when the run ends, however it ends. Job processes inherit the pid.
if workflow.is_main_process:
    server.set_owner(os.getpid())

try:
    config.update(resolve(config))
    # Relative to the working directory, so input paths stay the same when the checkout
    # moves (absolute paths would make a copied or renamed checkout re-run every job).
    PROMPTS = Path(os.path.relpath(prompts_dir(config, Path(workflow.basedir) / "prompts")))
    # A Hub dataset is downloaded (once) by the main process, before the DAG needs it;
    # job processes re-read this file and find it there.
    if workflow.is_main_process:
        fetch_dataset(config)
    PLAN = WorkflowPlan(config, PROMPTS)
except UserError as exc:
    sys.exit(f"episcribe: {exc}")

PATHS = PLAN.paths
SHARDS = PLAN.shards

# Snakemake 9.27.1's SIGTERM handler can deadlock (episcribe.command.stopping says how); only the
# main process schedules jobs.
if workflow.is_main_process:
    guard_sigterm()


wildcard_constraints:
    episode=r"\d{6}",


def job_inputs(module, shard):
    sources = PLAN.source_inputs(shard)
    if config["output"]["in_place"]:
        # Writing in place rewrites the data shards; their new mtime must not make every
        # annotation job look out of date (the frames and timestamps did not change).
        sources = [ancient(path) for path in sources]
    return {
        "prompts": PLAN.prompt_inputs(module),
        "sources": sources,
    }


def upstream_outputs(module, shard):
    """The staging files of the modules this one builds on, for the same shard, as
    rules.<rule>.output items (unnamed inputs: see validate_staging for why)."""
    return [
        path
        for dep in PLAN.upstream(module)
        for path in getattr(rules, shard.rule_name(dep)).output
    ]


def dataset_root(wildcards):
    """The dataset's directory: a param that is the prefix of the jobs' source inputs."""
    return str(PLAN.dataset.root)


def job_params(module, shard):
    return PLAN.module_params(module, shard) | {
        "cache_dir": str(PATHS.cache),
        "upstream_modules": PLAN.upstream(module),
        # Changes when one of the shard's episodes was staged with failed model calls, so
        # the next run re-runs the job, which asks the model again for those episodes.
        "incomplete": PLAN.incomplete_runs(module, shard),
    }


def final_outputs():
    # A deleted staging file must be annotated anew, but Snakemake does not rebuild a
    # missing intermediate file while everything downstream of it is up to date: so the
    # staging files that are missing are targets themselves. Only those: a present one
    # is up to date or not through validate_staging (which lists them all), and listing
    # all 40,000 again here cost seconds of every start at 10,000 episodes (each path is
    # matched against every rule's outputs while the DAG is built). Before the first
    # validation report exists validate_staging runs anyway, and with it every job whose
    # staging files are missing, so none is listed then. Plain paths, the same as the
    # rules' outputs (a few files: no need for the references validate_staging uses).
    validation = PATHS.validation_json
    missing = PLAN.missing_staging() if os.path.exists(validation) else []
    push = [PATHS.push_receipt] if PLAN.push_repo else []
    return (
        missing
        + push
        + [
            PATHS.write_manifest,
            validation,
            PATHS.timelines,
            PATHS.vqa_overlays,
            PATHS.summary_html,
            PATHS.usage_csv,
        ]
    )


def annotate_outputs():
    """Every output of the annotate rules (each staging file, and each job's summary and
    metrics), module by module, as rules.<rule>.output items of the rules that write them."""
    return [
        path
        for module in PLAN.modules
        for shard in SHARDS
        for path in getattr(rules, shard.rule_name(module)).output
    ]


def start_run():
    """onstart (the main snakemake process, not in a dry run): a model server on another
    node (vlm.server_launcher: slurm) cannot watch this pid, so this process alone keeps
    .episcribe/server/owner.heartbeat changing; the server job ends soon after a kill -9."""
    if config["vlm"]["server_launcher"] == "slurm":
        server.start_owner_heartbeat(SERVER_RUN_DIR)


def print_summary():
    """onsuccess: rows per style, model calls and losses per module, where things are."""
    validation = Path(PATHS.validation_json)
    if validation.exists():
        print("\n".join(end_of_run_lines(json.loads(validation.read_text()))))
    manifest = Path(PATHS.write_manifest)
    if manifest.exists():  # not after a module target (snakemake vqa) alone
        written = json.loads(manifest.read_text())
        print(f"Annotated dataset: {written['destination']}")
        if written.get("missing_in_source"):
            print(
                f"{len(written['missing_in_source'])} file(s) the source dataset lacks are "
                "missing in the annotated one too (their episodes were not annotated)"
            )
    if Path(PATHS.summary_html).exists():
        print(f"Report: {PATHS.summary_html} (or: snakemake --report report.html)")


def end_run():
    """onsuccess/onerror: stop the model server; let snakemake exit without idling."""
    server.stop(SERVER_RUN_DIR)
    # Snakemake's job rate limiter (--max-jobs-per-timespan, default 100/1s) arms a 1-s
    # threading.Timer on every scheduling round; the interpreter waits for the last one
    # before exiting, which added ~1.2 s to every run (measured). The scheduler is done
    # when these hooks run, so the pending wake-ups have nothing left to wake.
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()

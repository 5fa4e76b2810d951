"""The annotation rules: one per module and shard of episodes, and a target per module.

  annotate_signals_<shard>        keystates and motion rows from the robot's state (no model)
  annotate_plan_<shard>           subtasks (describe -> segment), plan, memory, task_aug
  annotate_interjections_<shard>  initial speech; interjections + spoken replies
  annotate_plan_update_<shard>    a refreshed plan at every interjection
  annotate_vqa_<shard>            frame-grounded question/answer pairs, per camera

<shard> is e12 for the job of episode 12, or s3 for the third shard when a job covers
several episodes (workflow.episodes_per_job); its log is named after its episodes.

Why a Python loop of rules and not one wildcard rule: a shard job writes a variable list
of per-episode files, which a wildcard rule cannot declare, and one job per episode costs
about a CPU-second of start-up each (docs/architecture.md).

Inputs of each job: exactly the prompt templates and answer schemas its module uses
(episcribe.modules.registry), the data shards and videos holding its episodes, and the upstream
modules' staging files (plan <- signals; interjections <- plan; plan_update <- plan,
interjections). Params: its own config section, the model identity (none for signals,
which asks no model), the seed where the module draws from it. So editing
prompts/vqa_*.txt re-runs only annotate_vqa jobs.
Outputs: results/{dataset}/staging/episode_{N:06d}/{module}.jsonl for each episode, and
the job's summary and metrics (results/{dataset}/jobs/annotate_{module}/{shard}.summary.json,
.metrics.jsonl: what it did with the model), which the validation report, the usage table
and the console summary count.

Priorities come from the registry (the plan chain first, vqa fills the slots left). All
jobs share vlm.client_concurrency requests in flight.

Module targets: a rule named after each module (signals, plan, interjections, ...)
needs all of that module's staging files, so `snakemake --cores all vqa` builds only the
VQA staging, and `--until vqa` stops there.
"""

for module in PLAN.modules:
    for shard in SHARDS:

        rule:
            name:
                shard.rule_name(module)
            input:
                *upstream_outputs(module, shard),
                **job_inputs(module, shard),
            output:
                PLAN.staging_outputs(module, shard),
                **PLAN.job_files(module, shard),
            log:
                PATHS.log(f"annotate_{module}", shard.label),
            benchmark:
                PATHS.benchmark(f"annotate_{module}", shard.label)
            priority: MODULE_SPECS[module].priority
            # On a cluster (profiles/slurm) the annotate jobs of several shards go to SLURM as
            # one submission: --group-components annotate=N there. No effect on local runs.
            group:
                "annotate"
            conda:
                "../envs/annotate.yaml"
            # No core of --cores: an annotate job mostly waits on the model server, and
            # holding a core would let a 2-core machine run only two of them at once, so
            # the latency-bound plan chain and the vqa jobs that fill the server would take
            # turns. The vlm resource (profiles/default: 8) bounds how many run at once.
            # On a cluster a job does hold a CPU: there --cores caps how many jobs of a
            # group share one allocation (and so its CPUs; profiles/slurm). Decided per
            # job, when the executor is known.
            threads: lambda wildcards: 0 if workflow.local_exec else 1
            resources:
                vlm=1,
                # Cluster resources of one job: CPU-side work only (decoding frames, HTTP),
                # the model runs in the server's own job. An estimate that grows with the
                # shard; override with --set-resources or the profile.
                mem_mb=2000,
                runtime=10 + 2 * len(shard.episodes),
            params:
                **job_params(module, shard),
                dataset_root=dataset_root,
            script:
                "../scripts/annotate_episodes.py"


for module in PLAN.modules:

    rule:
        name:
            module
        input:
            [path for shard in SHARDS for path in PLAN.staging_outputs(module, shard)],
        localrule: True

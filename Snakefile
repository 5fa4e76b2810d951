# episcribe: annotate a LeRobot v3 dataset with a vision-language model.
#
#   snakemake --cores all --config dataset__root=/path/to/dataset
#   snakemake --cores all --config dataset__repo_id=owner/name   (a Hub dataset)
#
# Paths (dataset = the dataset directory's name, or owner__name for a Hub dataset):
#   results/{dataset}/staging/episode_{N:06d}/{module}.jsonl   per module, per episode
#   results/{dataset}/cache/{module}/...                       rows keyed by their inputs
#   results/{dataset}/validation/report.{json,txt}             checks before writing
#   results/{dataset}/write/manifest.json                      what write_dataset wrote
#   results/{dataset}/annotated/                               the annotated dataset
#   results/{dataset}/push/receipt.json                        what push_dataset uploaded
#   resources/hub/{owner}__{name}/{revision}/                  a downloaded Hub dataset
#   logs/{dataset}/{rule}/...log, benchmarks/{dataset}/{rule}/...tsv
#
# The model server is not a file of this DAG: jobs that need the model call
# episcribe.vlm.server.ensure(), and the hooks below stop it when the run ends.

from snakemake.utils import min_version

min_version("9.0")


# Beside this file, so the workflow runs from any directory (see episcribe.command.cli).
configfile: f"{workflow.basedir}/config.yaml"


include: "rules/common.smk"
include: "rules/annotate.smk"
include: "rules/validate.smk"
include: "rules/write.smk"
include: "rules/push.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),


onstart:
    start_run()


onsuccess:
    end_run()
    print_summary()


onerror:
    end_run()

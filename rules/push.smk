"""push_dataset: upload the annotated dataset to the Hub (output.push_to_hub only).

Inputs: results/{dataset}/write/manifest.json (validated and written) and the prompts
the dataset card lists. Outputs: results/{dataset}/push/receipt.json: the repo, commit
and what was sent. The token is huggingface_hub's own (HF_TOKEN or `hf auth login`).
"""


rule push_dataset:
    input:
        manifest=rules.write_dataset.output.manifest,
        prompts=PLAN.all_prompt_inputs(),
    output:
        receipt=PATHS.push_receipt,
    log:
        PATHS.log("push_dataset"),
    benchmark:
        PATHS.benchmark("push_dataset")
    # Cluster nodes often cannot reach the Hub; the login node can.
    localrule: True
    conda:
        "../envs/dataset.yaml"
    params:
        **PLAN.push_params(),
    script:
        "../scripts/push_dataset.py"

"""Preflight: what would make every job fail, found once, before snakemake starts.

``episcribe`` reads the config as snakemake will (the packaged config.yaml, then each
``--configfile``, then ``--config``), then checks that the dataset opens, that every
prompt of the enabled modules loads, that the data of the episodes to annotate is sound
(:mod:`episcribe.lerobot.data_check`: shards, frame counts, fps, indices, task texts; before a
run only), and that the model backend can be used: the endpoint answers and serves
``vlm.model_id``, or vLLM can be started here. A problem is a
:class:`~episcribe.errors.UserError`, printed as one line per problem class. Nothing is
written, except that a write of the output killed while putting its files in place is
finished first (:mod:`episcribe.lerobot.file_commit`), and said so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import openai
import yaml
from snakemake.cli import parse_config

from episcribe import WORKFLOW_DIR
from episcribe.config import api_key, expand_dotted_keys, merge_sections, resolve
from episcribe.errors import ConfigError, ServerError
from episcribe.lerobot.data_check import check_data
from episcribe.lerobot.file_commit import finish_interrupted
from episcribe.modules.prompts import MODULE_PROMPT_KINDS, PromptSet
from episcribe.pipeline.workflow import WorkflowPlan, prompts_dir
from episcribe.vlm import server

PROMPTS = WORKFLOW_DIR / "prompts"
MODELS_TIMEOUT_S = 10.0


def snakemake_config(args: list[str]) -> dict:
    """The config snakemake will see for these command-line arguments."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--configfile", "--configfiles", nargs="+", default=[])
    parser.add_argument("--config", "-C", nargs="*", default=[])
    known, _ = parser.parse_known_args(args)
    config = _load(WORKFLOW_DIR / "config.yaml")
    for path in known.configfile:
        config = merge_sections(config, expand_dotted_keys(_load(Path(path))))
    try:  # values typed the way snakemake types them ("1" -> 1, "[0,1]" -> a list)
        flat = parse_config(known.config)
    except ValueError as exc:
        raise ConfigError(f"--config {' '.join(known.config)}: {exc}") from None
    return merge_sections(config, expand_dotted_keys(flat))


def check(args: list[str], backend: bool = True) -> WorkflowPlan:
    """Every check, in the order a user would fix them; returns the run's plan."""
    config = resolve(snakemake_config(args))
    plan = WorkflowPlan(config, prompts_dir(config, PROMPTS))
    # Before anything reads the output: a write killed mid-commit is finished first.
    note = finish_interrupted(Path(plan.destination() or plan.dataset.root))
    if note:
        print(f"episcribe: {note}", file=sys.stderr)
    prompts = PromptSet(plan.prompts_dir)
    for module in plan.modules:
        for kind in MODULE_PROMPT_KINDS[module]:
            prompts.get(kind)
    if backend:
        check_data(plan.dataset, plan.episodes)
        check_backend(plan.config["vlm"])
    return plan


def check_backend(vlm: dict) -> None:
    if vlm["backend"] == "fake":
        return
    base = vlm["api_base"]
    if vlm["backend"] == "openai" or server.answers(base):
        models = served_models(base, api_key(vlm))
        if vlm["model_id"] not in models:
            raise ServerError(
                f"{base} serves {', '.join(models) or 'no model'}, not vlm.model_id "
                f"{vlm['model_id']!r}: set vlm.model_id to one of them or point vlm.api_base "
                "at a server of that model"
            )
    elif vlm["server_launcher"] == "local":  # under SLURM, the GPU node needs vllm
        server.check_local_start(vlm)


def served_models(base_url: str, key: str) -> list[str]:
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=MODELS_TIMEOUT_S)
    try:
        return [model.id for model in client.models.list()]
    except openai.AuthenticationError:
        raise ServerError(
            f"{base_url} rejected the API key: export it as OPENAI_API_KEY (or the variable "
            "vlm.api_key_env names)"
        ) from None
    except openai.APIError as exc:
        raise ServerError(
            f"vlm.api_base {base_url} does not answer GET /models ({type(exc).__name__}): "
            "check that the server runs and is reachable from this host and that the URL "
            "ends in /v1; or set vlm.backend to vllm to start one"
        ) from None
    finally:
        client.close()


def _load(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys")
    return data

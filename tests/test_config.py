"""The config contract: defaults from one schema, dotted keys, clear errors, docs in sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from episcribe.command.cli import translate
from episcribe.config import load_schema, render_default_config, resolve
from episcribe.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_empty_config_gets_every_spec_default():
    config = resolve({})
    assert config["seed"] == 1729
    assert config["vlm"]["model_id"] == "Qwen/Qwen3.6-27B"
    assert config["vlm"]["api_base"] == "http://127.0.0.1:8000/v1"
    assert config["vlm"]["client_concurrency"] == 16
    assert config["vlm"]["fake"] == {
        "latency_ms": 0,
        "max_concurrency": 0,
        "fault_rate": 0.0,
        "oracle": None,
        "oracle_jitter_s": 0.0,
        "oracle_merge_rate": 0.0,
        "oracle_swap_rate": 0.0,
        "oracle_seed": 0,
    }
    assert config["plan"]["max_video_frames"] == 480
    assert config["plan"]["derive_task_from_video"] == "if_short"
    assert config["interjections"]["max_interjections_per_episode"] == 3
    assert config["vqa"]["vqa_emission_hz"] == 1.0
    assert config["output"]["in_place"] is False


def test_snakemake_style_double_underscore_keys_nest_and_coerce():
    # What `snakemake --config plan__enabled=false dataset__only_episodes=[0,2]` hands over.
    config = resolve(
        {"plan__enabled": "false", "dataset__only_episodes": ["0", "2"], "vqa__vqa_emission_hz": 2}
    )
    assert config["plan"]["enabled"] is False
    assert config["plan"]["plan_max_steps"] == 0  # the rest of the section keeps defaults
    assert config["dataset"]["only_episodes"] == [0, 2]
    assert config["vqa"]["vqa_emission_hz"] == 2


def test_dotted_keys_merge_into_sections_from_a_config_file():
    config = resolve({"vlm": {"backend": "fake"}, "vlm.fake.latency_ms": 300})
    assert config["vlm"]["backend"] == "fake"
    assert config["vlm"]["fake"]["latency_ms"] == 300


def test_null_strings_become_none_where_allowed():
    assert resolve({"vlm__camera_key": "null"})["vlm"]["camera_key"] is None


@pytest.mark.parametrize(
    "raw, named",
    [
        ({"vqa__vqa_emission_hz": "often"}, "vqa.vqa_emission_hz"),
        ({"vqa__vqa_emission_hz": -1}, "vqa.vqa_emission_hz"),
        ({"plan": {"max_steps": 3}}, "max_steps"),
        ({"vlm__backend": "tgi"}, "vlm.backend"),
        ({"plan__derive_task_from_video": "sometimes"}, "plan.derive_task_from_video"),
    ],
)
def test_bad_values_name_the_key(raw, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        resolve(raw)


def test_shipped_config_yaml_is_the_schema_rendered():
    """config.yaml's comments are the schema's descriptions; regenerate with python -m."""
    assert (REPO / "config.yaml").read_text() == render_default_config()
    assert resolve(yaml.safe_load((REPO / "config.yaml").read_text())) == resolve({})


def test_every_schema_key_has_a_description_and_default():
    def walk(props, prefix=""):
        for name, sub in props.items():
            key = prefix + name
            assert sub.get("description"), f"{key} has no description"
            if "properties" in sub:
                assert sub.get("default") == {}, f"section {key} needs default: {{}}"
                walk(sub["properties"], key + ".")
            else:
                assert "default" in sub, f"{key} has no default"

    walk(load_schema()["properties"])


def test_cli_rewrites_dotted_config_keys_only():
    args = ["--cores", "2", "--config", "plan.enabled=false", "vqa.vqa_emission_hz=2", "-n"]
    assert translate(args) == [
        "--cores",
        "2",
        "--config",
        "plan__enabled=false",
        "vqa__vqa_emission_hz=2",
        "-n",
    ]


def test_config_module_regenerates_config_yaml():
    out = subprocess.run(
        [sys.executable, "-m", "episcribe.config"], capture_output=True, text=True, check=True
    )
    assert out.stdout == (REPO / "config.yaml").read_text()


def test_command_line_keys_override_config_yaml_sections_in_any_order():
    # Snakemake hands over config.yaml's sections and --config's flat keys in one dict;
    # the flat key must win even when the section comes later.
    raw = {"dataset__root": "/data/robot", "dataset": {"root": None, "only_episodes": None}}
    assert resolve(raw)["dataset"]["root"] == "/data/robot"
    raw = {"dataset": {"root": None}, "dataset.root": "/data/robot"}
    assert resolve(raw)["dataset"]["root"] == "/data/robot"


def _plan(tmp_path, **sections):
    from episcribe.pipeline.workflow import WorkflowPlan

    return WorkflowPlan(resolve(sections), tmp_path)


def test_a_push_without_a_repo_or_any_dataset_is_refused_naming_the_keys(tmp_path):
    with pytest.raises(ConfigError, match="dataset__root=.*dataset__repo_id"):
        _plan(tmp_path)
    with pytest.raises(ConfigError, match="output.new_repo_id"):
        _plan(tmp_path, dataset={"root": str(tmp_path)}, output={"push_to_hub": True})


@pytest.mark.parametrize("episodes", [1, 6, 32, 100, 10_000])
def test_auto_job_cut_covers_every_episode_once_in_few_jobs(episodes):
    from episcribe.pipeline.workflow import AUTO_EPISODES_PER_JOB, MAX_JOBS, shard_episodes

    shards = shard_episodes(list(range(episodes)), "auto", n_modules=4)
    assert [e for s in shards for e in s.episodes] == list(range(episodes))
    # Few enough jobs for Snakemake, and none so small that start-up dominates it.
    assert len(shards) * 4 <= MAX_JOBS + 4
    assert all(len(s.episodes) >= AUTO_EPISODES_PER_JOB for s in shards[:-1])
    assert shard_episodes(list(range(episodes)), 1, n_modules=4)[-1].episodes == (episodes - 1,)


def test_the_api_key_comes_from_the_variable_config_names(monkeypatch):
    from episcribe.config import api_key

    vlm = resolve({"vlm": {"api_key_env": "MY_LAB_KEY"}})["vlm"]
    monkeypatch.delenv("MY_LAB_KEY", raising=False)
    assert api_key(vlm) == "EMPTY"
    monkeypatch.setenv("MY_LAB_KEY", "sk-lab")
    assert api_key(vlm) == "sk-lab"


def test_chat_template_kwargs_and_reasoning_effort_re_run_only_the_modules_asking_the_model(
    synth_small, tmp_path
):
    base = {"dataset": {"root": str(synth_small)}}
    default = _plan(tmp_path, **base)
    assert default.config["vlm"]["chat_template_kwargs"] == {}
    assert default.config["vlm"]["reasoning_effort"] is None
    for vlm in ({"chat_template_kwargs": {"reasoning": "short"}}, {"reasoning_effort": "low"}):
        changed = _plan(tmp_path, **base, vlm=vlm)
        shard = changed.shards[0]
        # rule params are what Snakemake compares: a change there re-runs the job
        for module in ("plan", "interjections", "vqa"):
            assert changed.module_params(module, shard) != default.module_params(module, shard)
        assert changed.module_params("signals", shard) == default.module_params("signals", shard)

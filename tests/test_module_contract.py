"""The plugin contract of an annotation module, and the run's counts read from declared
files: a module is one folder, found by the registry and run by the real workflow."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as ds
from smk import Workspace

from episcribe.config import resolve
from episcribe.modules import registry
from episcribe.vlm.sizing import auto_max_model_len

OUTSIDE = Path(__file__).resolve().parent / "outside_modules" / "stillness"
ONLY_VQA = {
    "signals__enabled": False,
    "plan__enabled": False,
    "interjections__enabled": False,
}


def _report(ws: Workspace) -> dict:
    return json.loads((ws.root / "results/synth_small/validation/report.json").read_text())


def test_every_module_folder_declares_its_settings_budgets_and_styles():
    schema = registry.config_schema()
    budgets = schema["properties"]["vlm"]["properties"]["max_completion_tokens"]["properties"]
    for spec in registry.SPECS:
        # A module no job runs (review: the review server writes its files) has no run.py.
        assert spec.folder.name == spec.name
        assert (spec.folder / "run.py").is_file() == spec.annotates
        if spec.settings:
            section = schema["properties"][spec.section]["properties"]
            assert "enabled" in section and all("default" in v for v in section.values())
        for kind in spec.prompt_kinds:
            assert spec.budget_key(kind) in budgets, kind
    # The defaults of every key come from the folders: a resolved empty config has them.
    config = resolve({})
    assert config["plan"]["plan_max_steps"] == 0 and config["vqa"]["vqa_emission_hz"] == 1.0
    assert config["vlm"]["max_completion_tokens"]["vqa"] == 256
    # Request sizing derives from the specs: 480 frames in sheets of 5 x 4, six interjection
    # frames; the largest sheet (square tiles, 1120 x 896 px) is 35 x 28 squares + 2 markers.
    assert registry.max_images(config) == 24
    assert registry.max_images(resolve({"plan": {"enabled": False}})) == 6
    vlm = registry.server_settings(config)
    assert vlm["max_image_size"] == [1120, 896]
    # 24 x 982 + 4096 text + 2 x 2048 (the segment budget), rounded up to 1024.
    assert auto_max_model_len(vlm) == 32768


def test_changing_episodes_per_job_counts_only_the_current_shards(synth_small, tmp_path):
    ws = Workspace(tmp_path / "ws", synth_small, **ONLY_VQA, workflow__episodes_per_job=1)
    ws.run()
    first = len(ws.fake_requests())
    assert first > 0 and _report(ws)["model_calls"]["vqa"]["calls"] == first
    # A prompt edit re-asks every episode, now in shards of two.
    prompt = ws.root / "prompts" / "vqa" / "vqa_count.txt"
    prompt.write_text(prompt.read_text() + "\nCount carefully.\n")
    ws.run(workflow__episodes_per_job=2)
    second = len(ws.fake_requests()) - first
    calls = _report(ws)["model_calls"]["vqa"]
    # Files of the old one-episode shards are still on disk and must not be counted.
    assert calls["calls"] == second and calls["annotated"] + calls["cached"] == 6
    usage = (ws.root / "results/synth_small/report/usage.csv").read_text().splitlines()
    vqa_row = next(line for line in usage if line.startswith("vqa,all,"))
    assert vqa_row.split(",")[2] == str(second)


def test_a_module_kept_outside_the_package_runs_through_the_workflow(synth_small, tmp_path):
    ws = Workspace(
        tmp_path / "ws",
        synth_small,
        env={registry.EXTRA_MODULES_ENV: str(OUTSIDE)},
        **ONLY_VQA,
        vqa__enabled=False,
        stillness__phrase="wait here",
    )
    run = ws.run()
    assert run.modules_run() >= {"annotate_stillness", "validate_staging", "write_dataset"}
    assert not ws.fake_requests()
    table = ds.dataset(ws.root / "results/synth_small/annotated/data", format="parquet").to_table()
    firsts = [
        rows
        for rows, index in zip(
            table["language_persistent"].to_pylist(), table["frame_index"].to_pylist(), strict=True
        )
        if index == 0
    ]
    assert len(firsts) == 6
    assert all([r["content"] for r in rows] == ["wait here"] for rows in firsts)
    assert _report(ws)["ok"]

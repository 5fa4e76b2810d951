"""Re-runs that reflect the code: a module's behaviour version re-runs exactly that module
and the modules downstream of it; the same code at another place re-runs nothing; the
task the plan module worked under reaches every module after it."""

from __future__ import annotations

import json

from smk import Workspace
from test_module_versions import package_copy

DOWNSTREAM_OF_INTERJECTIONS = {
    "annotate_interjections",
    "annotate_plan_update",
    "validate_staging",
    "write_dataset",
    "render_report",
    "summarize_run",
    "all",
}


def test_a_version_bump_reruns_that_module_and_the_ones_downstream(synth_small, tmp_path):
    ws = Workspace(tmp_path / "ws", synth_small)
    ws.run()
    before = len(ws.fake_requests())
    # The same package from another place (as after moving files): nothing to do.
    src = package_copy(tmp_path / "moved")
    ws.env["PYTHONPATH"] = str(src)
    assert ws.run().rules == [] and len(ws.fake_requests()) == before
    spec = src / "episcribe" / "modules" / "interjections" / "__init__.py"
    spec.write_text(spec.read_text().replace("    version=", "    version=9_000 + ", 1))
    run = ws.run()
    assert run.modules_run() == DOWNSTREAM_OF_INTERJECTIONS
    asked = {r["kind"] for r in ws.fake_requests()[before:]}
    # Interjections are asked anew; plan_update's inputs came back the same: its cache.
    assert asked == {"initial_speech", "interjection"}


def test_the_task_derived_from_the_video_reaches_every_module(make_synth, tmp_path):
    data = make_synth("debug", episodes=2, seconds=6.0, cameras=("cam",), tasks=["debug"])
    ws = Workspace(
        tmp_path / "ws",
        data,
        plan__n_task_rephrasings=0,
        plan__derive_task_from_video="if_short",
        vqa__enabled=False,
        interjections__interjection_min_t=0.5,
    )
    ws.run()
    derived = {}
    for index in (0, 1):
        staged = ws.root / f"results/debug/staging/episode_{index:06d}/plan.jsonl"
        (row,) = [json.loads(line) for line in staged.read_text().splitlines() if '"task"' in line]
        content = json.loads(row["content"])
        assert content["from"] == "video" and content["dataset_task"] == "debug"
        derived[index] = content["task"]
    requests = ws.fake_requests()
    downstream = [
        r for r in requests if r["kind"] in ("initial_speech", "interjection", "plan_refresh")
    ]
    assert {r["kind"] for r in downstream} >= {"initial_speech", "interjection", "plan_refresh"}
    assert all(r["task"] in derived.values() for r in downstream), downstream
    assert not any(r["task"] == "debug" for r in requests)

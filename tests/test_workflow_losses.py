"""No loss is silent: failed model calls, failed re-runs and dry runs, through real
`snakemake` runs against the fake server's faults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from smk import Workspace
from test_workflow import DATASET_OPTS, tree_hashes

# Faults fail fast: no retry, and a held ("timeout") request gives up after a second.
FAILING = dict(vlm__max_retries=0, vlm__request_timeout_s=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from synth import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "synth", seed=3, **DATASET_OPTS)


def report_of(ws: Workspace) -> dict:
    return json.loads((ws.root / "results/synth/validation/report.json").read_text())


def cache_entries(ws: Workspace, module: str) -> list[Path]:
    return list((ws.root / "results/synth/cache" / module).glob("??/*.jsonl"))


def test_a_run_whose_calls_all_fail_stops_with_a_named_error_and_caches_nothing(dataset, tmp_path):
    ws = Workspace(tmp_path, dataset, vlm__fake__fault_rate=1.0, **FAILING)
    run = ws.run(check=False)
    assert run.returncode != 0
    assert "model calls failed" in run.output and "vlm.max_failed_call_share" in run.output
    assert not (ws.root / "results/synth/write/manifest.json").exists()
    assert cache_entries(ws, "plan") == []
    assert ws.wait_no_server() == []

    fixed = ws.run(vlm__fake__fault_rate=0.0)
    assert "write_dataset" in fixed.rules
    assert report_of(ws)["ok"]
    assert all(m["failures"] == 0 for m in report_of(ws)["model_calls"].values())


def test_episodes_with_failed_calls_are_reported_and_asked_again_next_run(dataset, tmp_path):
    ws = Workspace(
        tmp_path,
        dataset,
        workflow__episodes_per_job=1,
        vlm__fake__fault_rate=0.1,
        vlm__max_failed_call_share=1.0,
        **FAILING,
    )
    first = ws.run()
    totals = report_of(ws)["model_calls"]
    incomplete = {(m, e) for m, t in totals.items() for e in t["incomplete"]}
    assert sum(t["failures"] for t in totals.values()) > 0 and incomplete
    assert "asked again by the next run" in first.output
    cache = ws.root / "results/synth/cache"
    for module, episode in incomplete:  # staged, but never cached as done
        key = (cache / module / "delivered" / f"episode_{episode:06d}").read_text().strip()
        assert not (cache / module / key[:2] / f"{key}.jsonl").exists()
    calls_before = len(ws.fake_requests())

    # Retries now rescue the server's faults; max_retries is no input of the answers, so
    # only the jobs of the incomplete episodes (and what builds on their rows) re-run.
    second = ws.run(vlm__max_retries=4)
    rerun = {
        (r.removeprefix("annotate_").rsplit("_e", 1)[0], int(r.rsplit("_e", 1)[1]))
        for r in second.rules
        if r.startswith("annotate_")
    }
    downstream = {"plan": {"interjections", "plan_update"}, "interjections": {"plan_update"}}
    allowed = incomplete | {(d, e) for m, e in incomplete for d in downstream.get(m, ())}
    assert incomplete <= rerun <= allowed
    assert 0 < len(ws.fake_requests()) - calls_before < calls_before
    assert all(t["incomplete"] == [] for t in report_of(ws)["model_calls"].values())

    assert ws.run(vlm__max_retries=4).rules == []  # complete now: nothing left to do


def test_a_failed_rerun_costs_no_cached_answer(dataset, tmp_path):
    ws = Workspace(tmp_path, dataset)
    ws.run()
    baseline = ws.staging("synth")
    prompt = ws.root / "prompts" / "vqa" / "vqa_bbox.txt"
    text = prompt.read_text()
    prompt.write_text(text + "\n{no_such_placeholder}\n")
    assert ws.run(check=False).returncode != 0  # Snakemake removed the vqa staging files
    calls = len(ws.fake_requests())  # the failed job's other calls included
    prompt.write_text(text)
    run = ws.run()
    assert "annotate_vqa_s0" in run.rules
    assert len(ws.fake_requests()) == calls, "the reverted prompt's answers were asked again"
    assert ws.staging("synth") == baseline


def test_dry_run_summary_and_lint_change_no_file(dataset, tmp_path):
    ws = Workspace(tmp_path, dataset)
    ws.run()
    calls = len(ws.fake_requests())
    (ws.root / "results/synth/staging/episode_000001/vqa.jsonl").unlink()
    watched = ("results", "logs", "benchmarks", ".episcribe")

    def state():
        return {d: tree_hashes(ws.root / d) for d in watched if (ws.root / d).exists()}

    before = state()
    for flags in (["-n"], ["--summary"], ["--lint"]):
        ws.run(*flags, check=False)
        assert state() == before, f"snakemake {' '.join(flags)} changed files"
    run = ws.run()
    assert [r for r in run.rules if r.startswith("annotate_")] == ["annotate_vqa_s0"]
    assert len(ws.fake_requests()) == calls  # restored from the cache


def test_redo_asks_the_model_again_for_exactly_that_episode(dataset, tmp_path):
    ws = Workspace(tmp_path, dataset, workflow__episodes_per_job=1)
    ws.run()
    calls = len(ws.fake_requests())
    pairs = (
        len((ws.root / "results/synth/staging/episode_000001/vqa.jsonl").read_text().splitlines())
        // 2
    )
    subprocess.run(
        [sys.executable, "-m", "episcribe.command.cli", "redo", "results/synth", "--modules", "vqa",
         "--episodes", "1"],
        cwd=ws.root, check=True, capture_output=True,
    )  # fmt: skip
    run = ws.run()
    assert [r for r in run.rules if r.startswith("annotate_")] == ["annotate_vqa_e1"]
    assert len(ws.fake_requests()) - calls == pairs


def test_only_episodes_in_place_keeps_every_other_episodes_rows(dataset, tmp_path):
    """The trial that erased both language columns of every other episode."""
    import shutil

    import pyarrow.parquet as pq

    data = tmp_path / "synth"
    shutil.copytree(dataset, data)
    opts = dict(output__in_place=True, output__allow_fake_in_place=True)
    ws = Workspace(tmp_path / "ws", data, **opts)
    ws.run()

    def language(episode):
        rows = []
        for shard in sorted((data / "data").rglob("*.parquet")):
            for row in pq.read_table(shard).to_pylist():
                if row["episode_index"] == episode:
                    rows.append((row["language_persistent"], row["language_events"]))
        return rows

    before = {e: language(e) for e in (0, 2)}
    assert all(p for rows in before.values() for p, _ in rows)
    ws.run(dataset__only_episodes=[1], seed=7, **opts)
    assert {e: language(e) for e in (0, 2)} == before
    assert not list(data.rglob(".*.tmp-*")), "a temporary file outlived the run"


def test_fake_annotations_are_labelled_and_need_an_opt_in_to_go_in_place(dataset, tmp_path):
    ws = Workspace(tmp_path, dataset, dataset__only_episodes=[0])
    refused = ws.run(output__in_place=True, check=False)
    assert refused.returncode != 0
    assert "output.allow_fake_in_place" in refused.output
    assert "Traceback" not in refused.output
    ws.run()
    record = json.loads((ws.root / "results/synth/annotated/meta/episcribe.json").read_text())
    assert record["backend"] == "fake" and record["fake_annotations"] is True
    assert record["model"]["model_id"] and len(record["prompts_sha256"]) == 64
    summary = (ws.root / "results/synth/report/summary.html").read_text()
    assert "Fake annotations." in summary

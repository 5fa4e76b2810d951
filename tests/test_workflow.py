"""The workflow end to end: real `snakemake` processes, real files, the fake model server.

Which jobs ran is read from snakemake's own output ("rule annotate_vqa_e1:").
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from smk import Workspace, terminate

from episcribe.lerobot.language import EVENT_COLUMN, PERSISTENT_COLUMN

DATASET_OPTS = dict(episodes=3, seconds=3.0, fps=10, episodes_per_file=2)
# What re-runs after any staging file changed: validation, the write and the report.
DOWNSTREAM = {"validate_staging", "write_dataset", "render_report", "summarize_run", "all"}


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from synth import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "synth", seed=3, **DATASET_OPTS)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, dataset) -> Workspace:
    """One complete run; tests that change something work on copies of it.

    One job per episode and module, so a test can see which episodes' jobs re-ran.
    """
    before = tree_hashes(dataset)
    ws = Workspace(tmp_path_factory.mktemp("baseline"), dataset, workflow__episodes_per_job=1)
    ws.first_run = ws.run()
    assert tree_hashes(dataset) == before, "the source dataset was modified"
    return ws


def copy_of(ws: Workspace, tmp_path: Path) -> Workspace:
    clone = object.__new__(Workspace)
    clone.root = tmp_path / "ws"
    shutil.copytree(ws.root, clone.root, symlinks=True)
    shutil.rmtree(clone.server_dir, ignore_errors=True)
    clone.config = dict(ws.config)
    clone.env = dict(ws.env)
    return clone


def annotated(ws: Workspace, name: str = "synth") -> Path:
    return ws.root / "results" / name / "annotated"


def test_full_run_writes_the_spec_columns_and_validates(baseline):
    assert {"validate_staging", "write_dataset", "all"} <= set(baseline.first_run.rules)
    report = json.loads((baseline.root / "results/synth/validation/report.json").read_text())
    assert report["errors"] == 0
    out = annotated(baseline)
    for shard in sorted((out / "data").rglob("*.parquet")):
        schema = pq.read_schema(shard)
        assert schema.field("language_persistent").type == PERSISTENT_COLUMN
        assert schema.field("language_events").type == EVENT_COLUMN
    info = json.loads((out / "meta" / "info.json").read_text())
    assert {"language_persistent", "language_events"} <= set(info["features"])
    assert any(t["function"]["name"] == "say" for t in info["tools"])
    assert "Annotated dataset:" in baseline.first_run.output


def test_second_run_executes_nothing_and_starts_no_server(baseline, tmp_path):
    ws = copy_of(baseline, tmp_path)
    run = ws.run()
    assert run.rules == []
    assert not ws.server_dir.exists() or not list(ws.server_dir.glob("fake_requests_*"))
    assert ws.server_processes() == []


def test_vqa_prompt_edit_reruns_only_vqa_then_validate_and_write(baseline, tmp_path):
    ws = copy_of(baseline, tmp_path)
    prompt = ws.root / "prompts" / "vqa" / "vqa_count.txt"
    prompt.write_text(prompt.read_text() + "\nCount carefully.\n")
    run = ws.run()
    assert run.modules_run() == {"annotate_vqa"} | DOWNSTREAM
    assert len([r for r in run.rules if r.startswith("annotate_vqa_e")]) == 3


def test_vqa_config_change_reruns_vqa_and_only_what_keeps_off_its_frames(baseline, tmp_path):
    ws = copy_of(baseline, tmp_path)
    run = ws.run(vqa__coordinate_space="pixels")
    assert run.modules_run() == {"annotate_vqa"} | DOWNSTREAM
    # the rate decides which frames VQA pairs hold, which interjections keep off
    run = ws.run(vqa__coordinate_space="pixels", vqa__vqa_emission_hz=2)
    moved = {"annotate_vqa", "annotate_interjections", "annotate_plan_update"}
    assert run.modules_run() == moved | DOWNSTREAM


def test_plan_config_change_reruns_plan_and_what_builds_on_it(baseline, tmp_path):
    ws = copy_of(baseline, tmp_path)
    run = ws.run(plan__plan_max_steps=3)
    assert (
        run.modules_run()
        == {
            "annotate_plan",
            "annotate_interjections",
            "annotate_plan_update",
        }
        | DOWNSTREAM
    )


def test_deleting_one_staging_file_rebuilds_only_that_episode(baseline, tmp_path):
    ws = copy_of(baseline, tmp_path)
    (ws.root / "results/synth/staging/episode_000001/vqa.jsonl").unlink()
    run = ws.run()
    assert [r for r in run.rules if r.startswith("annotate_")] == ["annotate_vqa_e1"]


def test_only_episodes_annotates_just_those(dataset, tmp_path):
    ws = Workspace(tmp_path, dataset, dataset__only_episodes=[1])
    ws.run()
    assert sorted(ws.staging("synth")) == [
        f"episode_000001/{m}.jsonl"
        for m in ("interjections", "plan", "plan_update", "signals", "vqa")
    ]
    table = pq.read_table(annotated(ws) / "data/chunk-000/file-000.parquet").to_pylist()
    for row in table:
        if row["episode_index"] == 1:
            assert row["language_persistent"], "annotated episode lost its rows"
        else:
            assert row["language_persistent"] == [] and row["language_events"] == []


@pytest.mark.parametrize(
    "disabled, expected",
    [
        ("plan", {"signals", "interjections", "plan_update", "vqa"}),
        ("interjections", {"signals", "plan", "vqa"}),
        ("vqa", {"signals", "plan", "interjections", "plan_update"}),
        ("signals", {"plan", "interjections", "plan_update", "vqa"}),
    ],
)
def test_a_disabled_module_is_skipped_and_the_rest_validate_and_write(
    dataset, tmp_path, disabled, expected
):
    ws = Workspace(
        tmp_path, dataset, **{f"{disabled}__enabled": False, "dataset__only_episodes": [0]}
    )
    run = ws.run()
    assert {
        m.removeprefix("annotate_") for m in run.modules_run() if m.startswith("annotate_")
    } == expected
    assert {"validate_staging", "write_dataset"} <= run.modules_run()
    report = json.loads((ws.root / "results/synth/validation/report.json").read_text())
    assert report["errors"] == 0


def test_switching_dataset_root_never_mixes_two_datasets(tmp_path):
    from synth import make_dataset

    first = make_dataset(tmp_path / "a" / "robot", seed=1, **DATASET_OPTS)
    second = make_dataset(
        tmp_path / "b" / "robot", seed=2, tasks=["Stack the cups."] * 3, **DATASET_OPTS
    )
    ws = Workspace(tmp_path / "ws", first)
    ws.run()
    run = ws.run(dataset__root=str(second))
    assert "annotate_plan" in run.modules_run(), "a new root must re-annotate"
    rows = [
        json.loads(line)
        for line in (ws.root / "results/robot/staging/episode_000000/plan.jsonl")
        .read_text()
        .splitlines()
    ]
    task_rows = [r["content"] for r in rows if r["style"] == "task_aug"]
    assert "Stack the cups." in task_rows


def test_sigterm_mid_run_then_rerun_matches_an_uninterrupted_run(baseline, dataset, tmp_path):
    ws = Workspace(tmp_path, dataset, vlm__fake__latency_ms=150)
    proc = ws.start()
    staging = ws.root / "results/synth/staging"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(staging.rglob("*.jsonl"))) < 3:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    terminate(proc, signal.SIGTERM)
    assert ws.wait_no_server() == [], "a model server outlived snakemake"
    ws.run()
    assert ws.staging("synth") == baseline.staging("synth")
    assert ws.wait_no_server() == []


def test_sigkill_of_snakemake_still_stops_the_server(dataset, tmp_path):
    ws = Workspace(tmp_path, dataset, vlm__fake__latency_ms=300)
    proc = ws.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (ws.server_dir / "server.json").exists():
        time.sleep(0.2)
    assert (ws.server_dir / "server.json").exists(), "the server never started"
    terminate(proc, signal.SIGKILL)
    assert ws.wait_no_server(timeout=30) == [], "the watchdog did not stop the server"


def test_a_failing_job_names_the_problem_and_stops_the_server(dataset, tmp_path):
    ws = Workspace(tmp_path, dataset, dataset__only_episodes=[0])
    prompt = ws.root / "prompts" / "vqa" / "vqa_bbox.txt"
    prompt.write_text(prompt.read_text() + "\n{no_such_placeholder}\n")
    run = ws.run(check=False)
    assert run.returncode != 0
    assert "no_such_placeholder" in run.output
    assert ws.wait_no_server() == []


def test_sharded_run_equals_per_episode_run_and_rebuilds_one_episode(baseline, dataset, tmp_path):
    ws = Workspace(tmp_path, dataset)  # auto: all 3 episodes in one job per module
    run = ws.run()
    assert [r for r in run.rules if r.startswith("annotate_vqa")] == ["annotate_vqa_s0"]
    assert ws.staging("synth") == baseline.staging("synth")

    calls_before = len(ws.fake_requests())
    target = ws.root / "results/synth/staging/episode_000001/vqa.jsonl"
    rows = target.read_text().splitlines()
    target.unlink()  # a missing staging file is restored, never re-asked
    run = ws.run()
    assert [r for r in run.rules if r.startswith("annotate_")] == ["annotate_vqa_s0"]
    assert len(ws.fake_requests()) == calls_before
    assert ws.staging("synth") == baseline.staging("synth")

    redo = [sys.executable, "-m", "episcribe.command.cli", "redo", "results/synth",
            "--episodes", "1", "--modules", "vqa"]  # fmt: skip
    subprocess.run(redo, cwd=ws.root, check=True, capture_output=True)
    run = ws.run()
    assert [r for r in run.rules if r.startswith("annotate_")] == ["annotate_vqa_s0"]
    # One call per VQA pair of episode 1, none for episode 0 (restored from the cache).
    assert len(ws.fake_requests()) - calls_before == len(rows) // 2
    assert ws.staging("synth") == baseline.staging("synth")


def test_real_av1_dataset_is_annotated_end_to_end(g1_source, tmp_path):
    before = tree_hashes(g1_source)
    ws = Workspace(tmp_path, g1_source)
    ws.run()
    report = json.loads((ws.root / "results/g1_bottle/validation/report.json").read_text())
    assert report["errors"] == 0
    out = annotated(ws, "g1_bottle")
    src = pq.read_table(g1_source / "data/chunk-000/file-000.parquet")
    dst = pq.read_table(out / "data/chunk-000/file-000.parquet")
    for name in src.column_names:
        assert dst.column(name).equals(src.column(name))
    assert tree_hashes(g1_source) == before


def test_a_module_target_builds_only_that_module(dataset, tmp_path):
    ws = Workspace(tmp_path, dataset)
    run = ws.run("vqa")
    assert run.modules_run() == {"annotate_vqa", "vqa"}
    assert sorted(ws.staging("synth")) == [f"episode_{e:06d}/vqa.jsonl" for e in range(3)]
    run = ws.run("interjections")
    assert run.modules_run() == {
        "annotate_signals",
        "annotate_plan",
        "annotate_interjections",
        "interjections",
    }

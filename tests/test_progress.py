"""The progress view: counted from the files jobs write, shown live in a terminal and as
periodic lines in a log file; Snakemake's job blocks only on request."""

from __future__ import annotations

import json
import os
import re
import subprocess

from test_cli import EPISCRIBE, env, episcribe, fake_config
from test_stopping import ANSI, read_all, run_in_terminal

from episcribe.command.preflight import PROMPTS
from episcribe.command.progress import Tracker, summary_line
from episcribe.config import resolve
from episcribe.pipeline.workflow import WorkflowPlan


def test_tracker_counts_this_runs_calls_and_failures(synth_small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = WorkflowPlan(resolve({"dataset": {"root": str(synth_small)}}), PROMPTS)
    metrics = tmp_path / plan.paths.jobs("vqa")
    metrics.mkdir(parents=True)
    old = metrics / "episode_000000.metrics.jsonl"
    old.write_text(json.dumps({"outcome": "ok"}) + "\n")  # an earlier run's call
    tracker = Tracker(plan)
    new = metrics / "episode_000001.metrics.jsonl"
    new.write_text("".join(json.dumps({"outcome": o}) + "\n" for o in ("ok", "error", "invalid")))
    with open(new, "a") as fh:
        fh.write('{"outcome": "o')  # a line being written is not counted yet
    staged = plan.paths.staging / "episode_000001" / "vqa.jsonl"
    staged.parent.mkdir(parents=True)
    staged.write_text("")
    vqa = {m.module: m for m in tracker.poll()}["vqa"]
    assert (vqa.done, vqa.total, vqa.calls, vqa.failed) == (1, len(plan.episodes), 3, 2)
    old.write_text(json.dumps({"outcome": "ok"}) + "\n")  # a re-run job starts its file anew
    vqa = {m.module: m for m in tracker.poll()}["vqa"]
    assert (vqa.calls, vqa.failed) == (3, 2)  # same size as before: nothing new yet
    assert "vqa 1/" in summary_line(tracker.modules, 10.0)


def test_a_log_file_gets_periodic_progress_lines_and_no_job_blocks(synth_small, tmp_path):
    log = tmp_path / "run.log"
    work = tmp_path / "work"
    work.mkdir()
    with open(log, "w") as fh:
        code = subprocess.run(
            [EPISCRIBE, "--progress-every", "1", "--config", *fake_config(synth_small),
             "dataset.only_episodes=[0,1]"],
            cwd=work, env=env(), stdout=fh, stderr=subprocess.STDOUT, timeout=300,
        ).returncode  # fmt: skip
    text = log.read_text()
    assert code == 0, text[-3000:]
    progress = [line for line in text.splitlines() if line.startswith("episcribe: [")]
    assert len(progress) >= 2
    last = progress[-1]
    for module in ("plan", "interjections", "plan_update", "vqa"):
        assert f"{module} 2/2 (" in last
    calls = sum(int(n) for n in re.findall(r"(\d+) calls", last))
    assert calls > 0 and " 0 failed" in last
    assert "localrule" not in text and "jobid:" not in text and "steps (" not in text
    assert "Annotated dataset:" in text


def test_show_jobs_brings_back_snakemakes_job_blocks(synth_small, tmp_path):
    out = episcribe(
        "--show-jobs", "--config", *fake_config(synth_small), "dataset.only_episodes=[0]",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "localrule annotate_vqa" in out.stderr


def test_a_terminal_shows_a_live_table_that_ends_with_the_totals(synth_small, tmp_path):
    proc, master = run_in_terminal(
        [EPISCRIBE, "--config", *fake_config(synth_small), "dataset.only_episodes=[0,1]"],
        tmp_path,
    )
    try:
        screen = ANSI.sub("", read_all(master, proc, timeout=300))
    finally:
        proc.wait(timeout=60)
        os.close(master)
    assert proc.returncode == 0, screen[-3000:]
    assert "model calls" in screen and "episodes/min" in screen
    tail = screen[screen.rindex("model calls") :]
    for module in ("plan", "interjections", "plan_update", "vqa"):
        assert re.search(rf"{module}\s+2/2\s", tail), tail
    assert "localrule" not in screen

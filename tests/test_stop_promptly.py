"""A stop with model calls hanging, and `episcribe` killed outright.

The fake server's timeout fault holds a request for a minute (until the client hangs
up), and ``vlm.request_timeout_s`` stays at its default of minutes: only a job that
cancels its calls on the signal exits in seconds. The request log says when each call
arrived, so a retry after the signal shows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from smk import Workspace
from test_cli import EPISCRIBE, env, fake_config
from test_stopping import staged, start_episcribe, wait_for

from episcribe.command.stopping import snakemake_processes
from episcribe.modules.registry import NAMES

EXIT_WITHIN_S = 10.0
# A request the client sent just before the signal may be read by the server just after.
ARRIVAL_GRACE_S = 0.5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from synth import make_dataset

    return make_dataset(
        tmp_path_factory.mktemp("data") / "synth",
        seed=7,
        episodes=4,
        seconds=2.0,
        fps=10,
        episodes_per_file=2,
    )


def requests(work: Path) -> list[dict]:
    rows = []
    for log in (work / ".episcribe" / "server").glob("fake_requests_*.jsonl"):
        rows += [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return rows


def server_processes(work: Path) -> list[int]:
    import psutil

    marker = str(work / ".episcribe" / "server")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def rerun(dataset: Path, work: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EPISCRIBE, "--config", *fake_config(dataset)],
        cwd=work, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("target", "after_s"), [("episcribe", 2.0), ("group", 5.0)], ids=["episcribe", "group"]
)
def test_sigterm_with_calls_hanging_exits_in_seconds_and_sends_nothing_after(
    dataset, tmp_path, target, after_s
):
    proc = start_episcribe(
        tmp_path, *fake_config(dataset), "vlm.fake.fault_rate=0.6",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: len(requests(tmp_path)) >= 4)
    time.sleep(after_s)
    signalled = time.time()
    if target == "episcribe":  # timeout(1), systemd
        proc.send_signal(signal.SIGTERM)
    else:  # SLURM, a terminal
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    took = time.time() - signalled
    assert took < EXIT_WITHIN_S, f"exited {took:.1f} s after SIGTERM"
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped (Terminated)" in err.strip().splitlines()[-1]
    wait_for(lambda: not server_processes(tmp_path), timeout=15)
    calls = requests(tmp_path)
    held = [c for c in calls if c["fault"] == "timeout"]
    assert held, "no call was hanging when the signal came: nothing tested"
    late = [c["arrival"] - signalled for c in calls if c["arrival"] > signalled + ARRIVAL_GRACE_S]
    assert late == [], f"requests arrived {late} s after the signal"

    again = rerun(dataset, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert staged(tmp_path) == 4 * len(NAMES)


def test_kill_9_of_episcribes_group_takes_snakemake_along_and_the_next_run_resumes(
    dataset, tmp_path
):
    proc = start_episcribe(
        tmp_path, *fake_config(dataset), "workflow.episodes_per_job=1",
        "vlm.fake.latency_ms=200",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: staged(tmp_path) >= 2)
    assert snakemake_processes(tmp_path), "no snakemake to outlive episcribe"
    os.killpg(proc.pid, signal.SIGKILL)  # episcribe's group; snakemake has its own
    proc.wait(timeout=10)
    wait_for(lambda: not snakemake_processes(tmp_path), timeout=20)
    wait_for(lambda: not server_processes(tmp_path), timeout=20)
    done = staged(tmp_path)
    assert done < 4 * len(NAMES), "the run ended before the kill: nothing tested"

    again = rerun(dataset, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert staged(tmp_path) == 4 * len(NAMES)


def test_sigterm_to_a_plain_snakemake_reaches_its_hanging_jobs(dataset, tmp_path):
    """Without `episcribe`: `kill <snakemake pid>`; snakemake's graceful stop would wait
    for its running jobs, so its SIGTERM helper passes the signal on to them."""
    ws = Workspace(tmp_path, dataset, vlm__fake__fault_rate=0.6)
    proc = ws.start()
    wait_for(lambda: len(requests(tmp_path)) >= 4)
    time.sleep(2.0)
    signalled = time.time()
    os.kill(proc.pid, signal.SIGTERM)  # snakemake alone, not its group
    try:
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    took = time.time() - signalled
    assert took < EXIT_WITHIN_S, f"exited {took:.1f} s after SIGTERM"
    assert ws.wait_no_server() == []
    calls = ws.fake_requests()
    assert [c for c in calls if c["fault"] == "timeout"], "no call was hanging: nothing tested"
    assert not [c for c in calls if c["arrival"] > signalled + ARRIVAL_GRACE_S]

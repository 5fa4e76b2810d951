"""The workflow on a real SLURM: `snakemake --profile profiles/slurm`, the model server a SLURM job.

Skipped unless EPISCRIBE_SLURM_TESTS=1 (CI sets it; locally: `EPISCRIBE_SLURM_TESTS=1
pytest -m slurm`). Needs root: the session fixture runs tests/slurm/start.sh, which
apt-installs Debian's slurm + munge if missing and starts munged, slurmctld and slurmd as
background daemons (a single node, partition `debug`, no accounting); tests/slurm/stop.sh
cancels every job and stops those daemons by pid afterwards, whatever happened. Every
snakemake is wrapped in `timeout -s KILL` (SIGTERM makes snakemake wait for its jobs).

The test cluster has no slurmdbd, so the runs add `--slurm-status-command squeue` to the
profile (profiles/slurm/config.yaml explains why the profile keeps sacct), short status
polls, and `--cores 1`: the server job holds one of the node's two CPUs, so a group job
asking for two would pend for ever.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from smk import REPO, Workspace

from episcribe.vlm import server

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        os.environ.get("EPISCRIBE_SLURM_TESTS") != "1",
        reason="needs a real SLURM (root, apt): set EPISCRIBE_SLURM_TESTS=1 (CI does)",
    ),
]

SNAKEMAKE_TIMEOUT_S = 240
# "Job … has been submitted with SLURM jobid 7 (log: …/slurm_logs/group_annotate_…/7.log)"
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: .*/slurm_logs/([^/]+)/")
# The node has no GPU; the server job gets one CPU and a little memory.
SERVER_ARGS = ["--time=30", "--mem=500", "--cpus-per-task=1"]
CLUSTER_FLAGS = (
    "--profile", "profiles/slurm",
    "--slurm-status-command", "squeue",          # no slurmdbd here (profile keeps sacct)
    "--slurm-init-seconds-before-status-checks", "2",
    "--seconds-between-status-checks", "2",
    "--cores", "1",                              # group jobs must fit beside the server job
)  # fmt: skip


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    import snakemake_executor_plugin_slurm  # noqa: F401 (the test extra installs it)

    scratch = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, SCRATCH=str(scratch))
    script = REPO / "tests" / "slurm"
    try:
        subprocess.run(
            ["timeout", "-s", "KILL", "600", "bash", str(script / "start.sh")], env=env, check=True
        )
        yield scratch
    finally:
        subprocess.run(
            ["timeout", "-s", "KILL", "120", "bash", str(script / "stop.sh")], env=env, check=False
        )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from synth import make_dataset

    return make_dataset(
        tmp_path_factory.mktemp("data") / "synth", episodes=3, seconds=2.0, episodes_per_file=2
    )


def all_jobs() -> dict[str, str]:
    """Every job the controller remembers (MinJobAge=300 s keeps finished ones): id -> name."""
    out = subprocess.run(
        ["squeue", "-h", "--states=all", "-o", "%i %j"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(maxsplit=1) for line in out.splitlines() if line.strip())


def active_jobs() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()


def cluster_run(ws: Workspace, *args: str) -> tuple[int, str]:
    cmd = ["timeout", "-s", "KILL", str(SNAKEMAKE_TIMEOUT_S), *ws.command(*CLUSTER_FLAGS, *args)]
    proc = subprocess.run(cmd, cwd=ws.root, capture_output=True, text=True, env=run_env())
    return proc.returncode, proc.stdout + proc.stderr


def run_env() -> dict:
    env = dict(os.environ)
    env.pop(server.OWNER_ENV, None)
    # Short heartbeats, so a killed run's server job ends within seconds.
    env[server.HEARTBEAT_ENV], env[server.STALE_ENV] = "1", "8"
    return env


def language_columns(ws: Workspace) -> list[dict]:
    rows = []
    for shard in sorted((ws.root / "results/synth/annotated/data").rglob("*.parquet")):
        table = pq.read_table(shard, columns=["language_persistent", "language_events"])
        rows += table.to_pylist()
    return rows


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return predicate()


def test_profile_run_with_the_server_as_a_slurm_job_equals_a_local_run(slurm, dataset, tmp_path):
    local = Workspace(tmp_path / "local", dataset)
    local.run()

    ws = Workspace(
        tmp_path / "cluster",
        dataset,
        vlm__server_launcher="slurm",
        vlm__slurm_server_args=SERVER_ARGS,
    )
    known = set(all_jobs())
    started = time.monotonic()
    code, out = cluster_run(ws)
    wall = time.monotonic() - started
    assert code == 0, out[-6000:]

    new = {job: name for job, name in all_jobs().items() if job not in known}
    by_snakemake = [kind for _, kind in SUBMITTED.findall(out)]
    groups = [kind for kind in by_snakemake if kind.startswith("group_annotate")]
    others = [kind for kind in by_snakemake if kind not in groups]
    servers = [job for job, name in new.items() if name.startswith("episcribe-serv")]
    print(f"\ncluster run: {wall:.1f} s, {len(new)} sbatch submissions: {len(groups)} annotate "
          f"group(s), {others}, {len(servers)} model server")  # fmt: skip
    # 3 episodes in one shard x 4 modules = 4 annotate jobs in 2 components -> 1 submission;
    # every other rule (validate_staging, write_dataset, ...) once; + the server's own job.
    assert len(groups) == 1, by_snakemake
    assert {"rule_validate_staging", "rule_write_dataset"} <= set(others), by_snakemake
    assert len(others) == len(set(others)) and not any("annotate" in k for k in others)
    assert len(servers) == 1 and len(new) == len(by_snakemake) + 1, new

    # The model was served by the SLURM job, at the node's name, not by a local process.
    log = (ws.server_dir / "supervisor.log").read_text()
    assert f"SLURM job {servers[0]}" in log and "serving at http://" in log, log
    assert "127.0.0.1" not in log.split("serving at ", 1)[1].splitlines()[0]
    assert ws.fake_requests(), "no request reached the fake server"

    assert ws.staging("synth") == local.staging("synth")
    assert language_columns(ws) == language_columns(local)
    assert any(row["language_persistent"] for row in language_columns(ws))

    # onsuccess scancel'd the server: no job and no server process is left behind.
    assert wait_until(lambda: not active_jobs(), 30), active_jobs()
    assert ws.wait_no_server(15) == []
    assert not (ws.server_dir / "server.json").exists()


def test_server_job_ends_when_the_owner_heartbeat_stops(slurm, tmp_path):
    """kill -9 of snakemake runs no hook: the stale owner heartbeat must end the SLURM job."""
    run_dir = tmp_path / "run"
    env = run_env()
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from episcribe.vlm import server; "
         "server.start_owner_heartbeat(sys.argv[1]); time.sleep(300)", str(run_dir)],
        env=env,
    )  # fmt: skip
    try:
        cfg = {"backend": "fake", "api_base": "http://127.0.0.1:9/v1"}
        cfg |= {"server_launcher": "slurm", "slurm_server_args": SERVER_ARGS}
        cmd = [sys.executable, "-m", "episcribe.vlm.server", "ensure", "--run-dir", str(run_dir)]
        cmd += ["--settings-json", json.dumps(cfg)]
        env[server.OWNER_ENV] = str(owner.pid)
        ensured = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert ensured.returncode == 0, ensured.stderr
        job = json.loads((run_dir / "server.json").read_text())["slurm_job"]
        time.sleep(10)  # longer than the stale bound (8 s): a beating owner keeps it up
        assert server.slurm_state(job) == "RUNNING"
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        assert wait_until(lambda: server.slurm_state(job) not in ("RUNNING", "PENDING"), 30)
        assert server.slurm_state(job) == "COMPLETED"  # it exited by itself, not cancelled
        assert "owner's heartbeat" in (run_dir / "supervisor.log").read_text()
    finally:
        owner.kill()
        owner.wait()
        server.stop(run_dir)


def test_killed_snakemake_leaves_no_server_job(slurm, dataset, tmp_path):
    """The same through a real snakemake, once rules/common.smk starts the owner heartbeat."""
    if "start_owner_heartbeat" not in (REPO / "rules" / "common.smk").read_text():
        pytest.skip("rules/common.smk does not start the owner heartbeat yet")
    ws = Workspace(
        tmp_path / "killed",
        dataset,
        vlm__server_launcher="slurm",
        vlm__slurm_server_args=SERVER_ARGS,
        vlm__fake__latency_ms=300,  # keep the annotate jobs busy while we kill snakemake
    )
    cmd = ["timeout", "-s", "KILL", str(SNAKEMAKE_TIMEOUT_S), *ws.command(*CLUSTER_FLAGS)]
    proc = subprocess.Popen(
        cmd, cwd=ws.root, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_until(lambda: (ws.server_dir / "server.json").exists(), 120)
        job = json.loads((ws.server_dir / "server.json").read_text())["slurm_job"]
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and timeout: no onerror hook
        proc.wait(timeout=10)
        assert wait_until(lambda: server.slurm_state(job) not in ("RUNNING", "PENDING"), 40)
        assert ws.wait_no_server(15) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # The orphaned annotate group job is SLURM's, not snakemake's: cancel it.
        subprocess.run(["scancel", "--user", "root"], check=False)
        assert wait_until(lambda: not active_jobs(), 30)

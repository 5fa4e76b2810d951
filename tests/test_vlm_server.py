"""The server lifecycle with real processes: start once, reuse, round-robin, every way it stops."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_fake_server import MODEL, SCHEMAS, free_port, read_log, run_fake, wait_until

from episcribe.config import resolve
from episcribe.errors import ServerError
from episcribe.vlm import server
from episcribe.vlm.client import VlmClient, user_message


def settings(**overrides) -> dict:
    """The vlm config section with the schema's defaults, for a fake server."""
    vlm = {
        "backend": "fake",
        "model_id": MODEL,
        "api_base": f"http://127.0.0.1:{free_port()}/v1",  # nothing listens there
        "startup_timeout_s": 20,
    }
    return resolve({"vlm": vlm})["vlm"] | overrides


def processes(run_dir: Path) -> list[tuple[int, int]]:
    """(pid, start ticks) of the supervisor and its replicas, from server.json."""
    state = json.loads((run_dir / "server.json").read_text())
    return [(state["pid"], state["start_time"])] + [
        (r["pid"], r["start_time"]) for r in state["replicas"]
    ]


def all_gone(procs) -> bool:
    return not any(server.alive(pid, ticks) for pid, ticks in procs)


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    try:
        yield d
    finally:
        server.stop(d, grace_s=5)


def ensure_cli(run_dir: Path, cfg: dict, env=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "episcribe.vlm.server", "ensure", "--run-dir", str(run_dir)]
    return subprocess.Popen(
        cmd + ["--settings-json", json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_replicas_are_round_robined_and_stop_leaves_no_process(run_dir):
    urls = server.ensure(settings(parallel_servers=2), run_dir)
    assert len(urls) == 2 and all(u.startswith("http://127.0.0.1:") for u in urls)
    assert server.ensure(settings(parallel_servers=2), run_dir) == urls  # reused
    procs = processes(run_dir)

    async def go():
        async with VlmClient(urls, MODEL, "EMPTY", concurrency=2) as client:
            msgs, schema = [user_message("x")], SCHEMAS["something_new"]
            jobs = [client.complete_json("k", msgs, schema) for _ in range(10)]
            return await asyncio.gather(*jobs)

    assert all(r is not None for r in asyncio.run(go()))
    per_replica = [len(read_log(run_dir / f"fake_requests_{i}.jsonl")) for i in range(2)]
    assert per_replica == [5, 5]
    assert server.stop(run_dir) is True
    assert all_gone(procs)
    assert not (run_dir / "server.json").exists()
    assert server.stop(run_dir) is False  # idempotent, and cheap when nothing runs


def test_concurrent_ensure_from_many_processes_starts_the_server_once(run_dir):
    cfg = settings()
    children = [ensure_cli(run_dir, cfg) for _ in range(6)]
    outputs = [child.communicate(timeout=60) for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    assert len({out for out, _ in outputs}) == 1  # every process got the same URL
    log = (run_dir / "supervisor.log").read_text()
    assert log.count("started:") == 1, log


def test_healthy_api_base_is_used_and_nothing_started(tmp_path, run_dir):
    with run_fake(tmp_path) as (base, _):
        for backend in ("fake", "vllm", "openai"):
            assert server.ensure(settings(backend=backend, api_base=base), run_dir) == [base]
    assert not (run_dir / "supervisor.json").exists()


def test_openai_backend_with_unreachable_api_base_is_a_server_error(run_dir):
    cfg = settings(backend="openai")
    with pytest.raises(ServerError, match=cfg["api_base"].replace(".", r"\.")):
        server.ensure(cfg, run_dir)
    assert not run_dir.exists()


def test_vllm_backend_without_vllm_installed_says_how_to_fix(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `vllm` executable anywhere
    with pytest.raises(ServerError, match="vllm"):
        server.ensure(settings(backend="vllm"), run_dir)


def test_startup_timeout_points_at_the_replica_log(run_dir):
    never_healthy = (
        f"{sys.executable} -c \"import time; print('loading weights', flush=True); "
        'time.sleep(300)" {port}'
    )
    cfg = settings(serve_command=never_healthy, startup_timeout_s=1.5)
    with pytest.raises(ServerError) as err:
        server.ensure(cfg, run_dir)
    message = str(err.value)
    assert str(run_dir / "replica_0.log") in message and "loading weights" in message
    assert "startup_timeout_s" in message
    assert wait_until(lambda: "exited" in (run_dir / "supervisor.log").read_text(), 10)

    def replica_gone() -> bool:
        out = subprocess.run(["pgrep", "-f", "loading weights"], capture_output=True, text=True)
        return out.stdout.strip() == ""

    assert wait_until(replica_gone, 10)  # the stuck replica was killed


def test_replica_crash_during_startup_is_reported_with_its_log(run_dir):
    crash = f"{sys.executable} -c \"print('CUDA out of memory'); raise SystemExit(3)\""
    with pytest.raises(ServerError, match="code 3") as err:
        server.ensure(settings(serve_command=crash), run_dir)
    assert "CUDA out of memory" in str(err.value)


def test_supervisor_stops_when_the_owner_dies(run_dir, monkeypatch):
    owner = subprocess.Popen(["sleep", "60"])
    try:
        monkeypatch.setenv(server.OWNER_ENV, str(owner.pid))
        server.ensure(settings(), run_dir)
        procs = processes(run_dir)
        assert json.loads((run_dir / "server.json").read_text())["owner_pid"] == owner.pid
        owner.send_signal(signal.SIGKILL)  # like kill -9 of snakemake: no hook runs
        owner.wait(timeout=5)
        assert wait_until(lambda: all_gone(procs), 10)
        assert not (run_dir / "server.json").exists()
    finally:
        owner.kill()
        owner.wait()


def test_no_server_is_started_for_an_owner_that_is_gone(run_dir, monkeypatch):
    """A job that outlived its kill -9'd snakemake must not start a server nobody stops."""
    owner = subprocess.Popen(["true"])
    owner.wait()
    monkeypatch.setenv(server.OWNER_ENV, str(owner.pid))
    with pytest.raises(ServerError, match=rf"pid {owner.pid}\) is gone: not starting"):
        server.ensure(settings(), run_dir)
    assert not (run_dir / "supervisor.json").exists()
    assert not (run_dir / "supervisor.log").exists()


def test_supervisor_gives_up_start_up_when_its_owner_dies(run_dir, monkeypatch):
    owner = subprocess.Popen(["sleep", "60"])
    # A server that never answers /health: start-up would last startup_timeout_s.
    slow = f"{sys.executable} -c 'import time; time.sleep(60)' --port {{port}}"
    monkeypatch.setenv(server.OWNER_ENV, str(owner.pid))
    proc = ensure_cli(run_dir, settings(serve_command=slow, startup_timeout_s=120))
    assert wait_until(lambda: (run_dir / "supervisor.json").exists(), 10)
    supervisor = json.loads((run_dir / "supervisor.json").read_text())
    owner.kill()
    owner.wait()
    assert wait_until(lambda: not server.alive(supervisor["pid"], supervisor["start_time"]), 10)
    assert "exited during start-up" in (run_dir / "supervisor.log").read_text()
    proc.kill()
    proc.communicate()


def test_supervisor_stops_after_the_idle_timeout(run_dir):
    child = ensure_cli(run_dir, settings(idle_timeout_s=1))  # the only client, gone at once
    assert child.wait(timeout=30) == 0, child.stderr.read()
    child.stdout.close()
    child.stderr.close()
    procs = processes(run_dir)
    assert wait_until(lambda: all_gone(procs), 10)
    assert "idle_timeout_s" in (run_dir / "supervisor.log").read_text()


def test_killed_supervisor_takes_its_replicas_along(run_dir):
    server.ensure(settings(parallel_servers=2), run_dir)
    (sup, _), *replicas = processes(run_dir)
    os.kill(sup, signal.SIGKILL)
    assert wait_until(lambda: all_gone(replicas), 5)
    assert server.ensure(settings(), run_dir)  # a dead record is replaced by a new server


def test_a_server_of_another_live_workflow_with_another_model_is_refused(run_dir, monkeypatch):
    other_owner = subprocess.Popen(["sleep", "60"])
    try:
        monkeypatch.setenv(server.OWNER_ENV, str(other_owner.pid))
        server.ensure(settings(), run_dir)
        monkeypatch.setenv(server.OWNER_ENV, str(os.getpid()))
        with pytest.raises(ServerError, match="another running workflow"):
            server.ensure(settings(model_id="other/model"), run_dir)
        # Same model: the server is shared, not restarted.
        assert (
            server.ensure(settings(), run_dir)
            == json.loads((run_dir / "server.json").read_text())["urls"]
        )
    finally:
        other_owner.kill()
        other_owner.wait()


def test_cli_ensure_then_stop(run_dir):
    child = ensure_cli(run_dir, settings())
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    procs = processes(run_dir)
    assert out.strip() == json.loads((run_dir / "server.json").read_text())["urls"][0]
    cmd = [sys.executable, "-m", "episcribe.vlm.server", "stop", "--run-dir", str(run_dir)]
    subprocess.run(cmd, check=True, timeout=30)
    assert all_gone(procs)


# -- cross-node mode (vlm.server_launcher: slurm) without SLURM --------------------------
# The slurm-marked tests in test_slurm.py run the same code against a real SLURM; these
# stand in fake sbatch/squeue/scancel commands (a job = a local background process).

FAKE_SLURM = r"""#!{python}
import os, signal, subprocess, sys
from pathlib import Path
jobs = Path(os.environ["FAKE_SLURM_DIR"])
jobs.mkdir(exist_ok=True)
name, args = Path(sys.argv[0]).name, sys.argv[1:]
(jobs / "calls.log").open("a").write(name + " " + " ".join(args) + "\n")

def state(job):
    try:
        pid = int((jobs / job).read_text())
    except (OSError, ValueError):
        return ""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{{pid}}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return "" if stat == "Z" else "RUNNING"
    except OSError:
        return ""

if name == "sbatch":
    out = next(a.split("=", 1)[1] for a in args if a.startswith("--output="))
    wrap = args[args.index("--wrap") + 1]
    job = str(len(list(jobs.glob("[0-9]*"))) + 100)
    env = dict(os.environ, SLURM_JOB_ID=job)
    proc = subprocess.Popen(["bash", "-c", wrap], stdout=open(out, "ab"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    (jobs / job).write_text(str(proc.pid))
    print(job)
elif name == "squeue":
    print(state(args[args.index("-j") + 1]))
elif name == "scancel":
    if state(args[0]):
        os.killpg(int((jobs / args[0]).read_text()), signal.SIGTERM)
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "squeue", "scancel"):
        path = bin_dir / name
        path.write_text(FAKE_SLURM.format(python=sys.executable))
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv(server.HEARTBEAT_ENV, "0.2")
    # Generous next to the 0.2 s beat: a loaded CI machine can take seconds to start the
    # owner process, and a heartbeat judged stale then would end the server too early.
    monkeypatch.setenv(server.STALE_ENV, "6")
    return tmp_path / "jobs"


def owner_process(run_dir: Path) -> subprocess.Popen:
    """Stands in for the main snakemake process: keeps the owner heartbeat going."""
    code = "import sys,time; from episcribe.vlm import server; "
    code += "server.start_owner_heartbeat(sys.argv[1]); time.sleep(120)"
    owner = subprocess.Popen([sys.executable, "-c", code, str(run_dir)])
    # Snakemake writes its first beat while parsing, before any job can call ensure();
    # a loaded machine can take seconds to start this stand-in, so wait for that beat.
    assert wait_until(lambda: (run_dir / server.OWNER_HEARTBEAT).exists(), 30)
    return owner


def test_slurm_launcher_submits_once_publishes_hostname_and_stop_cancels(
    run_dir, fake_slurm, monkeypatch
):
    import socket

    owner = owner_process(run_dir)
    try:
        monkeypatch.setenv(server.OWNER_ENV, str(owner.pid))
        cfg = settings(server_launcher="slurm", slurm_server_args=["--partition=gpu"])
        urls = server.ensure(cfg, run_dir)
        assert urls[0].startswith(f"http://{socket.gethostname()}:")
        children = [ensure_cli(run_dir, cfg) for _ in range(3)]  # other jobs reuse it
        outputs = [child.communicate(timeout=60) for child in children]
        assert [out.strip() for out, _ in outputs] == urls * 3, outputs
        calls = (fake_slurm / "calls.log").read_text().splitlines()
        submits = [c for c in calls if c.startswith("sbatch")]
        assert len(submits) == 1 and "--partition=gpu" in submits[0], calls
        state = json.loads((run_dir / "server.json").read_text())
        assert state["slurm_job"] == "100" and state["owner_pid"] == owner.pid
        assert list((run_dir / "clients").iterdir())  # heartbeat registrations
        procs = processes(run_dir)
        assert server.stop(run_dir) is True
        assert any(c.startswith("scancel 100") for c in (fake_slurm / "calls.log").open())
        assert wait_until(lambda: all_gone(procs), 10)
        assert not (run_dir / "server.json").exists()
        assert server.stop(run_dir) is False
    finally:
        owner.kill()
        owner.wait()


def test_slurm_server_exits_when_the_owner_heartbeat_stops(run_dir, fake_slurm, monkeypatch):
    owner = owner_process(run_dir)
    try:
        monkeypatch.setenv(server.OWNER_ENV, str(owner.pid))
        server.ensure(settings(server_launcher="slurm"), run_dir)
        procs = processes(run_dir)
        time.sleep(3)  # many beats: the beating owner keeps it up
        assert not all_gone(procs)
        owner.send_signal(signal.SIGKILL)  # kill -9 of snakemake: no hook, no scancel
        owner.wait(timeout=5)
        assert wait_until(lambda: all_gone(procs), 15)
        assert "owner's heartbeat" in (run_dir / "supervisor.log").read_text()
        assert not (run_dir / "server.json").exists()
    finally:
        owner.kill()
        owner.wait()


def test_slurm_server_idles_out_after_its_clients_heartbeats_stop(run_dir, fake_slurm):
    # No owner at all (EPISCRIBE_OWNER_PID unset): only the clients' heartbeats count.
    cfg = settings(server_launcher="slurm", idle_timeout_s=1)
    client = subprocess.Popen(
        [sys.executable, "-c", "import sys, json, time; from episcribe.vlm import server; "
         "server.ensure(json.loads(sys.argv[1]), sys.argv[2]); time.sleep(120)",
         json.dumps(cfg), str(run_dir)],
    )  # fmt: skip
    try:
        assert wait_until(lambda: (run_dir / "server.json").exists(), 30)
        procs = processes(run_dir)
        time.sleep(4)  # idle timeout + stale bound passed, but the client's heartbeat goes on
        assert not all_gone(procs)
        client.kill()
        client.wait()
        assert wait_until(lambda: all_gone(procs), 15)
        assert "idle_timeout_s" in (run_dir / "supervisor.log").read_text()
    finally:
        client.kill()
        client.wait()


def test_sbatch_refusal_is_a_server_error_naming_the_args(run_dir, fake_slurm, tmp_path):
    (tmp_path / "bin" / "sbatch").write_text("#!/bin/sh\necho 'invalid partition' >&2\nexit 1\n")
    cfg = settings(server_launcher="slurm", slurm_server_args=["--partition=nope"])
    with pytest.raises(ServerError, match="invalid partition") as err:
        server.ensure(cfg, run_dir)
    assert "slurm_server_args" in str(err.value)


# -- the serve command fits the config's requests ----------------------------------------


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_auto_vllm_command_is_sized_to_the_largest_request_of_the_config(tmp_path):
    from episcribe.modules.registry import server_settings

    config = resolve({"vlm": {"model_id": "Qwen/Qwen3.6-27B"}})
    vlm = server_settings(config)
    cmd = server.serve_command(vlm, 0, 8000, tmp_path)
    assert cmd[:3] == ["vllm", "serve", "Qwen/Qwen3.6-27B"]
    # 480 frames in sheets of 5 x 4 = 24 images of at most 1120 x 896 px (square tiles of
    # 224): 35 x 28 squares of 32 px + 2 markers each; + 4096 text allowance + twice the
    # largest budget (segment, 2048), rounded up to 1024: far below the model's 262,144.
    assert _flag(cmd, "--max-model-len") == str(32768)
    assert json.loads(_flag(cmd, "--limit-mm-per-prompt")) == {"image": 24, "video": 0}
    assert json.loads(_flag(cmd, "--structured-outputs-config")) == {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
    }
    assert "--enable-prompt-tokens-details" in cmd and "--reasoning-parser" not in cmd
    thinking = server.serve_command({**vlm, "enable_thinking": True}, 0, 8000, tmp_path)
    assert _flag(thinking, "--reasoning-parser") == "qwen3"
    assert int(_flag(thinking, "--max-model-len")) == 32768 + 2 * 4096
    fixed = server.serve_command({**vlm, "max_model_len": 32768}, 0, 8000, tmp_path)
    assert _flag(fixed, "--max-model-len") == "32768"


@pytest.mark.parametrize(
    ("sections", "images"),
    [
        ({}, 24),  # 480 frames in sheets of 20
        ({"plan": {"max_video_frames": 10}}, 6),  # the interjection window's 6 frames
        ({"plan": {"max_video_frames": 10, "relabel": True}}, 6),  # relabel sends 3
        ({"plan": {"enabled": False}, "interjections": {"enabled": False}}, 1),
    ],
)
def test_image_limit_is_the_most_images_one_request_of_the_config_carries(sections, images):
    from episcribe.modules.registry import server_settings

    assert server_settings(resolve(sections))["max_images"] == images


def test_started_fake_server_enforces_the_serve_commands_limits(run_dir):
    from test_fake_server import jpeg_url

    urls = server.ensure(settings(max_model_len=600, max_images=1), run_dir)

    async def go(images):
        async with VlmClient(urls, MODEL, "EMPTY", max_completion_tokens=100) as client:
            return await client.complete_json(
                "something_new", [user_message("x", images)], SCHEMAS["something_new"]
            )

    assert asyncio.run(go([jpeg_url((640, 480))])) is not None  # 307 + 100 tokens fit
    assert asyncio.run(go([jpeg_url((640, 480))] * 2)) is None  # 2 images, limit 1
    assert asyncio.run(go([jpeg_url((1280, 960))])) is None  # 1206 tokens > 600
    statuses = [e["status"] for e in read_log(run_dir / "fake_requests_0.jsonl")]
    assert statuses == [200, 400, 400]


def test_a_running_server_of_another_model_is_refused_naming_both(tmp_path, run_dir):
    with run_fake(tmp_path) as (base, _):
        for backend in ("vllm", "openai"):
            cfg = settings(backend=backend, api_base=base, model_id="Qwen/Qwen3.6-27B")
            with pytest.raises(ServerError, match=r"serves 'fake/model', not vlm.model_id 'Qwen"):
                server.ensure(cfg, run_dir)
    assert not (run_dir / "supervisor.json").exists()

"""Stopping a run the ways schedulers and people do, and running it again.

SIGTERM is sent the way the hang was found: to snakemake, within milliseconds of a job's
exit, while the main thread post-processes that job. kill -9 and Ctrl-C go through the
installed `episcribe` command; Ctrl-C is typed into a pseudo-terminal.
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import shutil
import signal
import subprocess
import termios
import time
from pathlib import Path

import psutil
import pytest
from smk import Workspace
from test_cli import EPISCRIBE, env, fake_config

from episcribe.modules.registry import NAMES

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TABLE_LINE = re.compile(
    r"\s*(episcribe\s+\S+\s*$|(module|signals|plan|interjections|plan_update|vqa)\s)"
)
SIGTERM_TRIALS = 4  # bench/bench_stopping.py runs many more


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from synth import make_dataset

    return make_dataset(
        tmp_path_factory.mktemp("data") / "synth",
        seed=5,
        episodes=6,
        seconds=2.0,
        fps=10,
        episodes_per_file=3,
    )


def sigterm_trial(ws: Workspace, rng: random.Random, timeout: float = 60) -> str:
    """Run from scratch, send SIGTERM within milliseconds of the first job's exit (to
    snakemake, or to its whole process group as SLURM and a terminal do): "exited" or
    "hung" (killed after ``timeout``), or "ended early: ..." if no job finished."""
    for name in ("results", "logs", "benchmarks"):
        shutil.rmtree(ws.root / name, ignore_errors=True)
    proc = ws.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        # Printed while the main thread post-processes the job; the scheduler waits on
        # its semaphore right after.
        if line.startswith("Finished jobid"):
            time.sleep(rng.uniform(0, 0.05))
            if rng.random() < 0.5:
                os.kill(proc.pid, signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGTERM)
            break
    else:
        return f"ended early: {proc.communicate()[0][-2000:]}"
    try:
        proc.communicate(timeout=timeout)
        return "exited"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "hung"


def test_sigterm_right_after_a_job_exits_never_hangs(dataset, tmp_path):
    ws = Workspace(tmp_path, dataset, workflow__episodes_per_job=1, vlm__fake__latency_ms=20)
    rng = random.Random(0)
    outcomes = [sigterm_trial(ws, rng) for _ in range(SIGTERM_TRIALS)]
    assert outcomes == ["exited"] * SIGTERM_TRIALS, outcomes
    assert ws.wait_no_server() == []
    ws.run()  # and the run resumes to the end
    assert len(ws.staging("synth")) == 6 * len(NAMES)


def start_episcribe(work: Path, *config: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [EPISCRIBE, "--config", *config],
        cwd=work,
        env=env(),
        text=True,
        **popen,
    )


def wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def staged(work: Path) -> int:
    return len(list((work / "results" / "synth" / "staging").rglob("*.jsonl")))


def kill_then_rerun(dataset: Path, work: Path) -> tuple[bool, str]:
    """kill -9 the snakemake of a running `episcribe`, then run the same command again:
    (finished with every staging file, the second run's first line)."""
    work.mkdir(parents=True, exist_ok=True)
    config = [*fake_config(dataset), "workflow.episodes_per_job=1"]
    proc = start_episcribe(
        work, *config, "vlm.fake.latency_ms=100",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: staged(work) >= 2)
    snakemake = next(p for p in psutil.Process(proc.pid).children() if "snakemake" in p.cmdline())
    snakemake.kill()  # kill -9: no hook runs, the lock stays
    proc.wait(timeout=30)
    assert list((work / ".snakemake" / "locks").glob("*.lock")), "no stale lock to test"
    again = subprocess.run(
        [EPISCRIBE, "--config", *config], cwd=work, env=env(), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    first = (again.stderr.splitlines() or [""])[0]
    return again.returncode == 0 and staged(work) == 6 * len(NAMES), first


def test_after_kill_9_the_next_run_resumes_without_unlock_and_says_so(dataset, tmp_path):
    finished, first_line = kill_then_rerun(dataset, tmp_path)
    assert finished
    assert "was killed and left Snakemake's lock" in first_line
    assert "removed" in first_line


def test_a_second_run_in_a_busy_directory_names_the_running_snakemake(dataset, tmp_path):
    first = start_episcribe(
        tmp_path,
        *fake_config(dataset),
        "vlm.fake.latency_ms=3000",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: list((tmp_path / ".snakemake" / "locks").glob("*.lock")))
        second = subprocess.run(
            [EPISCRIBE, "--config", *fake_config(dataset)],
            cwd=tmp_path,
            env=env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode != 0
        assert "snakemake is still running in" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=120)


def run_in_terminal(args: list[str], cwd: Path) -> tuple[subprocess.Popen, int]:
    """Start ``args`` with a pseudo-terminal as its controlling terminal; return the
    process and the terminal's master side (what a user types into and reads)."""
    master, slave = os.openpty()

    def take_terminal() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        args, cwd=cwd, env=env(TERM="xterm"), stdin=slave, stdout=slave, stderr=slave,
        preexec_fn=take_terminal,
    )  # fmt: skip
    os.close(slave)
    return proc, master


def read_all(master: int, proc: subprocess.Popen, timeout: float = 120) -> str:
    chunks = []
    deadline = time.monotonic() + timeout
    os.set_blocking(master, False)
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
            if data:
                chunks.append(data)
                continue
        except BlockingIOError:
            pass
        except OSError:  # the terminal closed: every process on it has exited
            break
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    return b"".join(chunks).decode(errors="replace")


def test_ctrl_c_prints_one_line_and_the_run_resumes(dataset, tmp_path):
    proc, master = run_in_terminal(
        [EPISCRIBE, "--config", *fake_config(dataset), "workflow.episodes_per_job=1",
         "vlm.fake.latency_ms=100"],
        tmp_path,
    )  # fmt: skip
    try:
        wait_for(lambda: staged(tmp_path) >= 2)
        os.read(master, 1 << 20)  # what was shown before the key press
        os.write(master, b"\x03")  # Ctrl-C, as typed
        after = read_all(master, proc)
        proc.wait(timeout=60)
    finally:
        os.close(master)
    text = ANSI.sub("", after).replace("\r", "").split("\n", 1)[-1]  # from a line start
    # What is left besides the live table (redrawn until the key press took effect).
    lines = [x for x in text.splitlines() if x.strip("^C ") and not TABLE_LINE.match(x)]
    assert proc.returncode == 130
    assert lines == [lines[-1]] and "stopped (Ctrl-C)" in lines[-1], text
    assert "Traceback" not in text and "Terminating" not in text
    again = subprocess.run(
        [EPISCRIBE, "--config", *fake_config(dataset), "workflow.episodes_per_job=1"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert staged(tmp_path) == 6 * len(NAMES)


def test_sigterm_to_episcribe_alone_stops_snakemake_in_one_line(dataset, tmp_path):
    """`timeout` and systemd signal only the process they started: episcribe."""
    proc = start_episcribe(
        tmp_path, *fake_config(dataset), "workflow.episodes_per_job=1", "vlm.fake.latency_ms=100",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: staged(tmp_path) >= 2)
    snakemake = next(p for p in psutil.Process(proc.pid).children() if "snakemake" in p.cmdline())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1].startswith("episcribe: stopped (Terminated)")
    assert not snakemake.is_running()
    assert not list((tmp_path / ".snakemake" / "locks").glob("*.lock"))

"""The `episcribe` command as a researcher meets it: installed, run from anywhere.

The command is the console script pip installed (with this checkout's code first on
PYTHONPATH), or a wheel built from this checkout and installed into a fresh virtual
environment, run from directories outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest
from smk import REPO, free_port

EPISCRIBE = shutil.which("episcribe")
pytestmark = pytest.mark.skipif(EPISCRIBE is None, reason="episcribe is not installed")


def env(**extra) -> dict:
    out = dict(os.environ)
    out.pop("EPISCRIBE_OWNER_PID", None)
    out["PYTHONPATH"] = str(REPO / "src")
    return {**out, **extra}


def episcribe(*args: str, cwd: Path, command: str | None = None, **kwargs):
    return subprocess.run(
        [command or EPISCRIBE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        **{"env": env(), **kwargs},
    )


def fake_config(dataset: Path) -> list[str]:
    return [
        f"dataset.root={dataset}",
        "vlm.backend=fake",
        f"vlm.api_base=http://127.0.0.1:{free_port()}/v1",
    ]


def test_help_is_episcribes_own_and_short(tmp_path):
    out = episcribe("--help", cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.startswith("usage: episcribe")
    for word in ("dataset.root=", "report", "stop-server", "--show-jobs", "OPENAI_API_KEY"):
        assert word in out.stdout
    assert len(out.stdout.splitlines()) < 70  # not Snakemake's 1,163 lines


def test_version_names_episcribe_and_snakemake(tmp_path):
    out = episcribe("--version", cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.startswith("episcribe 0.")
    assert "snakemake 9." in out.stdout


def test_runs_from_a_directory_outside_the_checkout(synth_small, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = episcribe("--config", *fake_config(synth_small), "dataset.only_episodes=[0,1]", cwd=work)
    assert out.returncode == 0, out.stderr[-3000:]
    annotated = work / "results" / synth_small.name / "annotated"
    assert (annotated / "meta" / "info.json").is_file()
    assert sorted(p.name for p in (work / "results" / synth_small.name / "staging").iterdir()) == [
        "episode_000000",
        "episode_000001",
    ]
    assert not (REPO / "results" / synth_small.name).exists()


def test_a_wheel_carries_the_workflow_and_runs_in_a_fresh_venv(synth_small, tmp_path):
    """Not the editable checkout: the Snakefile, rules, scripts and prompts come from the
    installed wheel (site-packages), and nothing is read from the checkout."""
    src = tmp_path / "src_copy"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if name.startswith(("resources/", "docs/", "bench/", "tests/")):
            continue
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        path = REPO / name
        if path.is_symlink():
            target.symlink_to(os.readlink(path))
        elif path.exists():
            shutil.copy2(path, target)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", tmp_path / "wheel", src], check=True)
    venv.create(tmp_path / "venv", system_site_packages=True)
    py = tmp_path / "venv" / "bin" / "python"
    wheel = next((tmp_path / "wheel").glob("episcribe-*.whl"))
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheel], check=True
    )
    shutil.rmtree(src)  # nothing may come from the copy either

    work = tmp_path / "work"
    work.mkdir()
    clean = env()
    clean.pop("PYTHONPATH")
    out = episcribe(
        "--show-jobs",  # Snakemake then names the profile it uses, beside the Snakefile
        "--config",
        *fake_config(synth_small),
        "dataset.only_episodes=[0]",
        cwd=work,
        command=str(tmp_path / "venv" / "bin" / "episcribe"),
        env=clean,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "site-packages/episcribe/workflow_files/profiles/default" in out.stderr
    assert (work / "results" / synth_small.name / "annotated" / "meta" / "info.json").is_file()


def test_dotted_and_double_underscore_keys_both_reach_the_workflow(synth_small, tmp_path):
    out = episcribe(
        "--dry-run",
        "--config",
        *fake_config(synth_small),
        "plan.enabled=false",
        "interjections__enabled=false",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "annotate_vqa" in out.stderr
    assert "annotate_plan" not in out.stderr and "annotate_interjections" not in out.stderr


SECRET = "sk-episcribe-test-3f9a1c"


@pytest.mark.parametrize("spelling", ["vlm.api_key", "vlm__api_key"])
def test_an_api_key_on_the_command_line_is_refused_in_one_line(synth_small, tmp_path, spelling):
    out = episcribe("--config", *fake_config(synth_small), f"{spelling}={SECRET}", cwd=tmp_path)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "OPENAI_API_KEY" in out.stderr and SECRET not in out.stderr + out.stdout
    assert not (tmp_path / ".snakemake").exists()  # nothing ran, nothing logged it


def test_an_api_key_in_a_config_file_is_refused_before_any_job(synth_small, tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"vlm:\n  api_key: {SECRET}\n")
    out = episcribe("--configfile", str(mine), "--config", *fake_config(synth_small), cwd=tmp_path)
    assert out.returncode != 0
    assert "vlm.api_key" in out.stderr and "OPENAI_API_KEY" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "results").exists()


def files_holding(root: Path, needle: bytes) -> set[str]:
    found = set()
    for path in root.rglob("*"):
        try:
            if path.is_file() and needle in path.read_bytes():
                found.add(str(path.relative_to(root)))
        except OSError:  # removed while we looked
            continue
    return found


def test_the_api_key_from_the_environment_is_written_nowhere(synth_small, tmp_path):
    """Not in Snakemake's job scripts while jobs run, nor in any log or result after."""
    proc = subprocess.Popen(
        [EPISCRIBE, "--config", *fake_config(synth_small), "vlm.fake.latency_ms=50"],
        cwd=tmp_path,
        env=env(OPENAI_API_KEY=SECRET),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    leaked: set[str] = set()
    scripts_seen = False
    while proc.poll() is None:
        scripts_seen |= any((tmp_path / ".snakemake" / "scripts").glob("*.py"))
        leaked |= files_holding(tmp_path, SECRET.encode())
        time.sleep(0.1)
    output = proc.stdout.read()
    assert proc.returncode == 0, output[-3000:].decode(errors="replace")
    assert scripts_seen, "no job script was seen while jobs ran"
    leaked |= files_holding(tmp_path, SECRET.encode())
    assert leaked == set()
    assert SECRET.encode() not in output

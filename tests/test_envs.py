"""The workflow's own checks: every rule that runs code names a conda env whose pins are
pyproject.toml's, and `snakemake --lint` finds nothing (no conda channel is reachable
here, so the environments themselves are not built)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from smk import Workspace

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~ \[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_name(r): r.split("==", 1)[1] for r in project["dependencies"] if "==" in r}


def test_env_pins_are_the_package_pins():
    pins = _pins()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert {e.stem for e in envs} == {"annotate", "dataset", "report"}
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        assert pip, env
        for requirement in pip:
            name, version = requirement.split("==")
            assert pins.get(_name(name)) == version, f"{env.name}: {requirement} vs pyproject"


def test_every_rule_that_runs_code_names_an_env_that_exists():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        scripts = len(re.findall(r"^\s+script:", text, re.MULTILINE))
        envs = re.findall(r'^\s+conda:\s*\n\s+"(\.\./envs/[^"]+)"', text, re.MULTILINE)
        assert len(envs) == scripts, f"{smk.name}: {scripts} scripts, {len(envs)} conda envs"
        assert all((smk.parent / e).resolve().is_file() for e in envs), smk.name


def test_snakemake_lint_finds_nothing(synth_small, tmp_path):
    ws = Workspace(tmp_path, synth_small)
    run = ws.run("--lint")
    assert "Lints for" not in run.output, run.output


def test_workflow_files_are_snakefmt_formatted():
    files = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    check = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *map(str, files)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr

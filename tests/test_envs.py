"""The workflow's own checks: every rule that runs code names a conda env whose pins are
pyproject.toml's, and `snakemake --lint` finds nothing (no conda channel is reachable
here, so the environments themselves are not built)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from smk import Workspace

from episcribe.modules import registry

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


def _module_file(name: str) -> Path | None:
    base = REPO / "src" / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path) -> set[str]:
    """Absolute names of what a file imports (a ``from a import b`` gives a.b and a)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(REPO / "src").with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def _third_party_imports(script: Path, extra: list[str]) -> set[str]:
    """Top-level third-party packages a job script imports, through episcribe, all the way."""
    seen: set[str] = set()
    todo = [name for name in _imports_of_script(script) | set(extra)]
    outside = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top != "episcribe":
            outside.add(top)
            continue
        path = _module_file(name)
        if path is not None:
            todo += sorted(_imports(path))
    return {top for top in outside if top not in sys.stdlib_module_names and top != "snakemake"}


def _imports_of_script(script: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_each_env_lists_what_its_jobs_import():
    """A job imports only what its conda env installs (the host's site-packages must not
    be what makes it work): every rule's script, followed through the package."""
    distributions = importlib.metadata.packages_distributions()
    rule_block = re.compile(
        r'conda:\s*\n\s+"\.\./envs/([^"]+)".*?script:\s*\n\s+"\.\./scripts/([^"]+)"', re.S
    )
    checked = 0
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for env_name, script_name in rule_block.findall(smk.read_text()):
            spec = yaml.safe_load((REPO / "envs" / env_name).read_text())
            pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
            listed = {_name(requirement) for requirement in pip}
            # The annotate script runs each module's code, imported by name from the registry.
            extra = (
                [f"{spec_.package}.run" for spec_ in registry.SPECS if spec_.annotates]
                if script_name == "annotate_episodes.py"
                else []
            )
            needed = _third_party_imports(REPO / "scripts" / script_name, extra)
            for top in needed:
                dists = {_name(d) for d in distributions.get(top, [top])}
                assert dists & listed, f"{env_name}: {script_name} imports {top} ({dists})"
            checked += 1
    assert checked >= 6

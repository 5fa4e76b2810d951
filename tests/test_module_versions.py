"""Each module's behaviour version guards its cache: for fixed inputs (the bundled sample
dataset, the fake server, a fixed seed) the rows a module makes are stored with the
version that made them (tests/golden/<module>.json). Rows that change under the same
version would come back from the caches of earlier runs as the old code made them, so
the test fails and says to raise the version.

Regenerate after raising a version:
    EPISCRIBE_REGENERATE_GOLDEN=1 pytest tests/test_module_versions.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_fake_server import run_fake
from test_modules_plan import run_chain

from episcribe.modules import registry

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "sample_dataset"
GOLDEN = Path(__file__).resolve().parent / "golden"
EPISODES = (0, 3)


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("golden")
    with run_fake(tmp) as (base, _):
        return {index: run_chain(SAMPLE, index, base, tmp) for index in EPISODES}


@pytest.mark.parametrize("module", registry.NAMES)
def test_rows_change_only_with_the_module_version(module, chains):
    spec = registry.MODULES[module]
    rows = {
        str(index): [json.loads(json.dumps(r, sort_keys=True)) for r in chain[module].rows]
        for index, chain in chains.items()
    }
    path = GOLDEN / f"{module}.json"
    if os.environ.get("EPISCRIBE_REGENERATE_GOLDEN"):
        path.write_text(json.dumps({"version": spec.version, "rows": rows}, indent=1) + "\n")
    golden = json.loads(path.read_text())
    if golden["version"] != spec.version:
        pytest.fail(
            f"{module}: version {spec.version}, golden rows of version {golden['version']}: "
            "regenerate them with EPISCRIBE_REGENERATE_GOLDEN=1 pytest "
            "tests/test_module_versions.py"
        )
    assert rows == golden["rows"], (
        f"the {module} module's rows changed for the same inputs while its version stayed "
        f"{spec.version}: raise SPEC.version in src/episcribe/modules/{module}/__init__.py "
        "(cached episodes would otherwise keep the old rows), then regenerate the golden "
        "rows with EPISCRIBE_REGENERATE_GOLDEN=1 pytest tests/test_module_versions.py"
    )


def package_copy(root: Path) -> Path:
    """A copy of the installed package's source (as after moving the checkout)."""
    src = root / "src"
    shutil.copytree(
        REPO / "src" / "episcribe",
        src / "episcribe",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return src


def test_a_behaviour_change_without_a_version_bump_fails_its_golden_test(tmp_path):
    src = package_copy(tmp_path)
    code = src / "episcribe" / "modules" / "signals" / "run.py"
    text = code.read_text()
    assert 'make_row("assistant", phrase, "motion"' in text
    code.write_text(
        text.replace(
            'make_row("assistant", phrase, "motion"',
            'make_row("assistant", phrase + " now", "motion"',
        )
    )
    test = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        __file__,
        "-k",
        "rows_change_only and signals",
    ]
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("EPISCRIBE_REGENERATE_GOLDEN", None)
    run = subprocess.run(test, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout[-3000:]
    assert "raise SPEC.version in src/episcribe/modules/signals/__init__.py" in run.stdout
    # The same change with the version raised asks for new golden rows instead.
    spec = src / "episcribe" / "modules" / "signals" / "__init__.py"
    spec.write_text(spec.read_text().replace("version=1,", "version=2,"))
    run = subprocess.run(test, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "regenerate them" in run.stdout, run.stdout[-3000:]

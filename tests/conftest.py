"""Shared fixtures: real datasets on disk (the bundled real one and synthetic ones)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# shared/ sits beside the repository, in development and in CI alike.
G1_BOTTLE = REPO.parent / "shared" / "datasets" / "g1_bottle"


@pytest.fixture(autouse=True)
def _scheduling_unchanged():
    """Every process a test starts inherits this process's scheduling. A library that
    makes it real-time (SVT-AV1 does, as root) lets two busy children (a browser and its
    driver) starve everything else on a 2-core machine, so that a later test hangs."""
    before = os.sched_getscheduler(0)
    yield
    assert os.sched_getscheduler(0) == before, "the test process was left real-time"


@pytest.fixture(scope="session")
def g1_source() -> Path:
    """The real AV1 robot dataset, read-only: tests must never write into it."""
    if not G1_BOTTLE.exists():
        pytest.skip(f"real dataset not found at {G1_BOTTLE}")
    return G1_BOTTLE


@pytest.fixture
def g1_copy(g1_source: Path, tmp_path: Path) -> Path:
    """A writable copy of g1_bottle for tests that need to damage or modify it."""
    dst = tmp_path / "g1_bottle"
    shutil.copytree(g1_source, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    dst.chmod(0o755)
    return dst


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 4-second episodes, two H.264 cameras, four episodes per file (read-only use)."""
    from synth import make_dataset

    return make_dataset(tmp_path_factory.mktemp("synth") / "synth_small", seed=0)


@pytest.fixture
def make_synth(tmp_path: Path):
    """Build a fresh synthetic dataset with custom options inside this test's tmp dir."""
    from synth import make_dataset

    def build(name: str = "synth", **kwargs) -> Path:
        return make_dataset(tmp_path / name, **kwargs)

    return build

"""WorkflowPlan's path helpers: the fast string forms name exactly the pathlib paths."""

from __future__ import annotations

import os

import pytest

from episcribe.config import resolve
from episcribe.pipeline.staging import MODULES, staging_file, staging_paths
from episcribe.pipeline.workflow import WorkflowPlan


@pytest.mark.parametrize(
    "directory, prefix",
    [
        (".", ""),
        ("/", "/"),
        ("results/x/staging", "results/x/staging/"),
        ("results/x/staging/", "results/x/staging/"),
        ("/a//b", "/a/b/"),
    ],
)
def test_staging_paths_follow_the_grammar_for_any_directory_spelling(directory, prefix):
    episodes = [0, 7, 123456, 1234567]
    for module in MODULES:
        expected = [f"{prefix}episode_{e:06d}/{module}.jsonl" for e in episodes]
        assert staging_paths(directory, episodes, module) == expected
        assert [str(staging_file(directory, e, module)) for e in episodes] == expected


def test_staging_paths_check_like_staging_file():
    with pytest.raises(ValueError, match="unknown module"):
        staging_paths("s", [0], "memory")
    with pytest.raises(ValueError, match=">= 0"):
        staging_paths("s", [1, -1], "plan")


@pytest.fixture
def plan(synth_small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = resolve({"dataset": {"root": str(synth_small)}, "workflow": {"episodes_per_job": 4}})
    return WorkflowPlan(config, tmp_path / "prompts")


def test_plan_paths_match_pathlib(plan):
    staging = plan.paths.staging
    assert len(plan.shards) > 1
    for shard in plan.shards:
        for module in plan.modules:
            assert plan.staging_outputs(module, shard) == [
                str(staging_file(staging, e, module)) for e in shard.episodes
            ]
        expected = set()
        for e in shard.episodes:
            info = plan.dataset.episode_info(e)
            expected |= {info.data_path, *(seg.path for seg in info.videos.values())}
        assert plan.source_inputs(shard) == [str(p) for p in sorted(expected)]
    assert plan.all_staging() == [
        str(staging_file(staging, e, m)) for m in plan.modules for e in plan.episodes
    ]


def test_missing_staging_lists_exactly_the_absent_files(plan):
    assert plan.missing_staging() == plan.all_staging()
    for path in plan.all_staging():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()
    assert plan.missing_staging() == []
    gone = str(staging_file(plan.paths.staging, plan.episodes[2], "vqa"))
    os.remove(gone)
    assert plan.missing_staging() == [gone]

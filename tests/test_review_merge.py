"""A person's corrections (the review module) in the one merge the writer, validator and
report use, on staging files on disk."""

from episcribe.lerobot import language as L
from episcribe.modules import registry
from episcribe.pipeline.staging import (
    merge_modules,
    read_review,
    review_file,
    reviewed_episodes,
    staging_paths,
    write_rows,
)


def _model_rows():
    return {
        "plan": [
            L.make_row("assistant", "reach", "subtask", 0.0),
            L.make_row("assistant", "grasp", "subtask", 1.0),
            L.make_row("assistant", "1. reach 2. grasp", "plan", 0.0),
            L.make_row("assistant", "1. grasp", "plan", 1.0),
            L.make_row("user", "pick the cup", "task_aug", 0.0),
        ],
        "plan_update": [L.make_row("assistant", "1. grasp the red one", "plan", 1.0)],
        "vqa": [
            L.make_row("user", "how many cups?", "vqa", 0.5, camera="top"),
            L.make_row("assistant", '{"label": "cup", "count": 1}', "vqa", 0.5, camera="top"),
        ],
    }


def test_review_rows_replace_every_module_rows_of_their_styles(tmp_path):
    review = [
        L.make_row("assistant", "reach for the cup", "subtask", 0.0),
        L.make_row("assistant", "grasp the cup", "subtask", 1.5),
        L.make_row("assistant", "1. reach 2. grasp", "plan", 0.0),
        L.make_row("assistant", "1. grasp", "plan", 1.5),
    ]
    write_rows(review_file(tmp_path / "review", 3), review)
    modules = ["plan", "plan_update", "vqa"]
    rows = {**_model_rows(), **read_review(tmp_path / "review", 3, modules)}
    merged = merge_modules(rows)
    subtasks = [(m, r["content"], r["timestamp"]) for m, r in merged if r["style"] == "subtask"]
    assert subtasks == [("review", "reach for the cup", 0.0), ("review", "grasp the cup", 1.5)]
    # plan_update's refreshed plan goes too: the person's plan rows are the episode's.
    assert {m for m, r in merged if r["style"] == "plan"} == {"review"}
    # The review holds no VQA rows, so the person deleted them all; task_aug is not
    # correctable and stays the model's.
    assert not [r for _, r in merged if r["style"] == "vqa"]
    assert [m for m, r in merged if r["style"] == "task_aug"] == ["plan"]


def test_without_a_review_file_the_model_rows_stay(tmp_path):
    assert read_review(tmp_path / "review", 3, ["plan"]) == {}
    assert read_review(None, 3, ["plan"]) == {}  # review.enabled: false
    merged = merge_modules(_model_rows())
    # plan_update still supersedes the plan module's row at its timestamp.
    plans = sorted((r["timestamp"], m) for m, r in merged if r["style"] == "plan")
    assert plans == [(0.0, "plan"), (1.0, "plan_update")]


def test_review_rows_of_a_disabled_module_are_ignored(tmp_path):
    write_rows(
        review_file(tmp_path, 0),
        [
            L.make_row("assistant", "reach", "subtask", 0.0),
            L.make_row("user", "how many?", "vqa", 0.0, camera="top"),
        ],
    )
    (got,) = read_review(tmp_path, 0, ["plan"]).values()
    assert [r["style"] for r in got] == ["subtask"]


def test_reviewed_episodes_lists_only_review_files(tmp_path):
    write_rows(review_file(tmp_path, 12), [])
    write_rows(review_file(tmp_path, 3), [])
    (tmp_path / "episode_000003.json").write_text("{}")
    (tmp_path / "gold.jsonl").write_text("")
    assert reviewed_episodes(tmp_path) == [3, 12]
    assert reviewed_episodes(tmp_path / "absent") == []


def test_review_is_registered_but_never_a_job():
    assert "review" in registry.MODULES and "review" not in registry.NAMES
    assert "review" not in registry.enabled({s.section: {"enabled": True} for s in registry.SPECS})
    try:
        staging_paths(".", [0], "review")
    except ValueError as exc:
        assert "unknown module" in str(exc)
    else:
        raise AssertionError("review has no staging path")

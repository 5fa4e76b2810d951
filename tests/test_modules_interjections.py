"""interjections + plan_update against the fake server over real HTTP."""

from __future__ import annotations

import numpy as np
import pytest
from test_fake_server import run_fake
from test_modules_plan import (
    errors_of,
    frame_set,
    run_chain,
    run_module,
    settings_for,
)

from episcribe.lerobot.language import is_speech_atom, make_row
from episcribe.modules.plan.run import task_row


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """One fake server process for this file's tests: (base_url, request_log)."""
    with run_fake(tmp_path_factory.mktemp("fake")) as served:
        yield served


def f32(t: float) -> float:
    return float(np.float32(t))


G1_CAMERA = ("observation.images.cam_high",)


def plan_rows(starts, task="Pick up the red block and put it in the bin"):
    rows = [task_row(task, task, starts[0]), make_row("user", task, "task_aug", starts[0])]
    rows += [make_row("assistant", f"Step {k}", "subtask", t) for k, t in enumerate(starts)]
    return rows


def speech_times(rows):
    return [r["timestamp"] for r in rows if is_speech_atom(r)]


@pytest.mark.parametrize("dataset", ["synth_small", "g1_source"])
def test_each_interjection_has_speech_and_a_plan_update_at_its_timestamp(
    dataset, request, fake, tmp_path
):
    root = request.getfixturevalue(dataset)
    cameras = G1_CAMERA if dataset == "g1_source" else ("observation.images.top",)
    out = run_chain(
        root,
        0,
        fake[0],
        tmp_path,
        modules=("plan", "interjections", "plan_update"),
        interjections={"interjection_min_t": 1.0},
    )
    ts = out["plan"].episode.timestamps
    starts = [r["timestamp"] for r in out["plan"].style("subtask")]
    inter = out["interjections"].style("interjection")
    times = [r["timestamp"] for r in inter]
    assert 1 <= len(inter) <= 3
    assert set(times) <= set(starts[1:]), "interjections sit on subtask boundaries"
    assert all(t - float(ts[0]) >= 1.0 for t in times)
    assert all(r["role"] == "user" and r["content"] for r in inter)
    speech = speech_times(out["interjections"].rows)
    assert speech[0] == float(ts[0]), "the acknowledgement is at the first frame"
    assert sorted(speech[1:]) == sorted(times)
    assert [r["timestamp"] for r in out["plan_update"].rows] == sorted(times)
    assert all(
        r["style"] == "plan" and r["content"].startswith("1. ") for r in out["plan_update"].rows
    )
    for row in out["plan_update"].rows:
        # The recording shows the robot doing the steps still planned: the refreshed plan
        # rewords them, it neither adds nor drops one.
        still_planned = [s for s in starts if s >= row["timestamp"]]
        assert len(row["content"].splitlines()) == len(still_planned)
    events = [r["timestamp"] for r in out["interjections"].rows]
    assert set(events) <= frame_set(out["plan"].episode), "event rows on real frame timestamps"
    assert not errors_of(out["plan"].episode, cameras, out)
    assert out["interjections"].kinds.count("interjection") == len(inter)
    assert out["plan_update"].kinds == ["plan_refresh"] * len(inter)


def test_boundaries_are_drawn_with_the_seed_after_interjection_min_t(synth_small, fake, tmp_path):
    starts = [f32(0.0)] + [f32(0.1 * k) for k in range(5, 39, 3)]
    upstream = {"plan": plan_rows(starts)}

    def chosen(seed, **settings):
        res = run_module(
            "interjections",
            synth_small,
            0,
            fake[0],
            tmp_path / "m.jsonl",
            settings=settings_for("interjections", **settings),
            seed=seed,
            upstream=upstream,
        )
        return [r["timestamp"] for r in res.style("interjection")]

    picks = chosen(1729)
    assert picks == chosen(1729) and len(picks) == 3
    assert all(t >= 2.0 for t in picks) and set(picks) <= set(starts)
    assert any(chosen(seed) != picks for seed in range(5)), "the seed decides the boundaries"
    assert chosen(1729, max_interjections_per_episode=0) == []
    assert chosen(1729, interjection_min_t=3.6) == [f32(3.8)]


def test_no_plan_rows_means_only_the_acknowledgement(synth_small, fake, tmp_path):
    res = run_module("interjections", synth_small, 0, fake[0], tmp_path / "m.jsonl")
    assert len(res.rows) == 1 and is_speech_atom(res.rows[0])
    assert res.kinds == ["initial_speech"]


def test_failed_calls_are_skipped_and_plan_update_falls_back_to_the_planned_steps(
    synth_small, tmp_path
):
    starts = [0.0, 1.0, 2.0, 3.0]
    inter = [make_row("user", "Use your left hand.", "interjection", t) for t in (2.0, 3.0)]
    upstream = {"plan": plan_rows(starts), "interjections": inter}
    with run_fake(tmp_path, "--fault-rate", "1", "--fault-cycle", "nonjson") as (base, _):
        res = run_module(
            "interjections", synth_small, 0, base, tmp_path / "a.jsonl", upstream=upstream
        )
        upd = run_module(
            "plan_update", synth_small, 0, base, tmp_path / "b.jsonl", upstream=upstream
        )
    assert res.rows == [] and res.skipped == 3  # the acknowledgement and both interjections
    assert [r["timestamp"] for r in upd.rows] == [2.0, 3.0]
    assert [r["content"] for r in upd.rows] == ["1. Step 2\n2. Step 3", "1. Step 3"]
    assert upd.skipped == 2

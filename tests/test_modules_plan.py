"""The plan module against the fake server over real HTTP, plus its pure stitching logic.

``run_module``/``run_chain`` and the ``fake`` fixture are shared with the other module
tests (``from test_modules_plan import ...``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from test_fake_server import MODEL, read_log, run_fake

from episcribe.config import resolve
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.lerobot.frames import SheetGrid
from episcribe.modules import registry
from episcribe.modules.base import (
    EpisodeContext,
    FrameSource,
    is_placeholder_task,
    rng_for,
    sample_times,
    snap_indices,
)
from episcribe.modules.plan.stitching import join_steps, stitch
from episcribe.modules.plan.windows import plan_windows
from episcribe.modules.prompts import PromptSet
from episcribe.modules.registry import MODULES, NAMES
from episcribe.pipeline.validation import ERROR, validate_episode
from episcribe.vlm.client import VlmClient

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "prompts"
DEFAULTS = resolve({})
SECTIONS = {m: spec.section if spec.settings else None for m, spec in MODULES.items()}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """One fake server process for the module's tests: (base_url, request_log)."""
    with run_fake(tmp_path_factory.mktemp("fake")) as served:
        yield served


def settings_for(module: str, **overrides) -> dict:
    section = SECTIONS[module]
    return {**(DEFAULTS[section] if section else {}), **overrides}


class Result:
    def __init__(self, rows, skipped, kinds, episode):
        self.rows, self.skipped, self.kinds, self.episode = rows, skipped, kinds, episode

    def style(self, style):
        return [r for r in self.rows if r["style"] == style]


def run_module(
    module: str,
    root: Path,
    index: int,
    base: str,
    metrics: Path,
    *,
    settings: dict | None = None,
    vlm: dict | None = None,
    seed: int = 1729,
    upstream: dict | None = None,
) -> Result:
    """Run one module on one episode against the server at ``base``."""
    dataset = LeRobotDataset.open(root)
    episode = dataset.load_episode(index)
    vlm = {**DEFAULTS["vlm"], "camera_key": dataset.cameras[0], **(vlm or {})}
    metrics.unlink(missing_ok=True)

    async def go():
        async with VlmClient([base], MODEL, "EMPTY", metrics_path=metrics, timeout_s=5) as c:
            ctx = EpisodeContext(
                dataset=dataset,
                episode=episode,
                client=c,
                prompts=PromptSet(PROMPTS),
                settings=settings if settings is not None else settings_for(module),
                vlm=vlm,
                seed=seed,
                upstream=upstream or {},
                frames=FrameSource(dataset, episode, vlm),
            )
            rows = await asyncio.wait_for(registry.run_episode(module)(ctx), 60)
            return rows, ctx.skipped

    rows, skipped = asyncio.run(go())
    kinds = (
        [json.loads(line)["kind"] for line in metrics.read_text().splitlines()]
        if metrics.exists()
        else []
    )
    return Result(rows, skipped, kinds, episode)


def run_chain(root, index, base, tmp_path, modules=NAMES, seed=1729, **settings):
    """Run modules in order, feeding upstream rows; ``settings``: module -> overrides."""
    out: dict[str, Result] = {}
    for module in modules:
        upstream = {d: out[d].rows for d in MODULES[module].upstream if d in out}
        out[module] = run_module(
            module,
            root,
            index,
            base,
            tmp_path / f"{module}.metrics.jsonl",
            settings=settings_for(module, **settings.get(module, {})),
            seed=seed,
            upstream=upstream,
        )
    return out


def errors_of(episode, cameras, results: dict[str, Result]) -> list:
    problems = validate_episode(episode, cameras, {m: r.rows for m, r in results.items()})
    return [p for p in problems if p.severity == ERROR]


def frame_set(episode) -> set[float]:
    return {float(t) for t in episode.timestamps}


def check_cover(result: Result, max_steps: int) -> list[float]:
    """The subtask invariants; returns the starts."""
    ts = result.episode.timestamps
    starts = [r["timestamp"] for r in result.style("subtask")]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert starts[0] == float(ts[0]), "the first subtask starts at the first frame"
    assert set(starts) <= frame_set(result.episode), "starts are real frame timestamps"
    assert 1 <= len(starts) <= (max_steps or len(ts))  # 0: no cap
    assert all(r["content"].strip() and r["role"] == "assistant" for r in result.style("subtask"))
    return starts


# -- behaviour through the fake server ------------------------------------------------


def test_subtask_cover_is_gap_free_from_first_frame_on_real_timestamps(synth_small, fake, tmp_path):
    base, _ = fake
    for index in (0, 5):
        result = run_module("plan", synth_small, index, base, tmp_path / "m.jsonl")
        starts = check_cover(result, DEFAULTS["plan"]["plan_max_steps"])
        steps = [r["content"] for r in result.style("subtask")]
        plans = result.style("plan")
        assert [p["timestamp"] for p in plans] == starts
        for k, plan in enumerate(plans):
            assert plan["content"] == "\n".join(
                f"{i}. {s}" for i, s in enumerate(steps[k:], start=1)
            )
        assert [m["timestamp"] for m in result.style("memory")] == starts[1:]
        aug = result.style("task_aug")
        assert aug[0]["content"] == result.episode.task and len(aug) > 1
        assert all(r["role"] == "user" and r["timestamp"] == starts[0] for r in aug)
        assert len({" ".join(r["content"].lower().split()) for r in aug}) == len(aug)
        assert result.kinds.count("memory") == len(starts) - 1
        assert not errors_of(result.episode, ["observation.images.top"], {"plan": result})


def test_plan_on_real_av1_episode_respects_plan_max_steps(g1_source, fake, tmp_path):
    base, _ = fake
    result = run_module(
        "plan",
        g1_source,
        1,
        base,
        tmp_path / "m.jsonl",
        settings=settings_for("plan", plan_max_steps=2),
    )
    check_cover(result, 2)
    assert result.kinds.count("segment") == 1 and "describe" not in result.kinds
    assert "derive_task" not in result.kinds  # "Pick up the yellow bottle on the table."


def test_windowed_episode_merges_spans_into_one_cover(make_synth, fake, tmp_path):
    base, _ = fake
    root = make_synth("long", episodes=1, seconds=12.0, fps=10, cameras=("cam",))
    # 25 samples at 2 fps, sheets of 4, at most 8 frames a request: 6 overlapping windows.
    small = dict(sheet_columns=2, sheet_rows=2, max_video_frames=8)
    settings = settings_for("plan", subtask_describe_first=True, **small)
    result = run_module("plan", root, 0, base, tmp_path / "m.jsonl", settings=settings)
    windows = plan_windows(LeRobotDataset.open(root).load_episode(0).timestamps, 2.0, 8, 0, 4)
    assert len(windows) == 6
    assert result.kinds.count("segment") == 6 and result.kinds.count("describe") == 6
    starts = check_cover(result, 0)
    assert starts[-1] > 6.0, "later windows contribute subtasks"
    settings = settings_for("plan", subtask_window_seconds=5, **small)
    fixed = run_module("plan", root, 0, base, tmp_path / "m2.jsonl", settings=settings)
    assert fixed.kinds.count("segment") == 3 and "describe" not in fixed.kinds
    check_cover(fixed, 0)


def test_task_derivation_if_short_replaces_placeholder_only(make_synth, fake, tmp_path):
    base, _ = fake
    root = make_synth(
        "tasks",
        episodes=2,
        seconds=2.0,
        cameras=("cam",),
        tasks=["test", "Put the red block in the bin"],
    )

    def task_of(index, mode):
        settings = settings_for("plan", derive_task_from_video=mode, n_task_rephrasings=2)
        res = run_module("plan", root, index, base, tmp_path / "m.jsonl", settings=settings)
        effective, *rephrasings = res.style("task_aug")  # the effective task comes first
        assert len(rephrasings) == 2
        return effective["content"], res.kinds.count("derive_task")

    derived, calls = task_of(0, "if_short")
    assert calls == 1 and derived.lower() != "test" and len(derived.split()) >= 3
    assert task_of(1, "if_short") == ("Put the red block in the bin", 0)
    assert task_of(0, "off") == ("test", 0)
    always, calls = task_of(1, "always")
    assert calls == 1 and always != "Put the red block in the bin"


def test_no_rephrasings_means_no_task_aug_rows_and_a_derived_task_is_logged(
    make_synth, fake, tmp_path, caplog
):
    # LeRobot trains on a task_aug row in place of the task column: with no rephrasings
    # asked for, none is written; a task read from the video is logged with the one it
    # replaced.
    base, _ = fake
    root = make_synth("notaug", episodes=1, seconds=2.0, cameras=("cam",), tasks=["debug"])
    settings = settings_for("plan", n_task_rephrasings=0)
    with caplog.at_level("INFO", logger="episcribe.modules.plan.run"):
        res = run_module("plan", root, 0, base, tmp_path / "m.jsonl", settings=settings)
    assert res.style("task_aug") == [] and "task_rephrasings" not in res.kinds
    assert res.kinds.count("derive_task") == 1 and res.style("subtask")
    (line,) = [r.getMessage() for r in caplog.records if "derived" in r.getMessage()]
    assert "episode 000000" in line and "in place of the dataset's 'debug'" in line


def test_same_seed_gives_byte_identical_rows(synth_small, fake, tmp_path):
    base, _ = fake
    first = run_chain(synth_small, 2, base, tmp_path)
    second = run_chain(synth_small, 2, base, tmp_path)
    for module in NAMES:
        a = [json.dumps(r, sort_keys=True) for r in first[module].rows]
        b = [json.dumps(r, sort_keys=True) for r in second[module].rows]
        assert a == b, module
    assert not errors_of(
        first["plan"].episode, ("observation.images.top", "observation.images.wrist"), first
    )


def test_failed_answers_fall_back_to_the_task_and_are_counted(synth_small, tmp_path):
    # Every call is answered with schema-violating JSON (and so is the re-prompt).
    with run_fake(tmp_path, "--fault-rate", "1", "--fault-cycle", "schema") as (base, _):
        result = run_module("plan", synth_small, 1, base, tmp_path / "m.jsonl")
    (subtask,) = result.style("subtask")
    assert subtask["content"] == result.episode.task
    assert subtask["timestamp"] == float(result.episode.timestamps[0])
    assert [r["content"] for r in result.style("task_aug")] == [result.episode.task]
    assert result.style("memory") == [] and len(result.style("plan")) == 1
    assert result.skipped == 2  # segment, rephrasings


# -- pure logic -------------------------------------------------------------------------

TS = (np.arange(50, dtype=np.float32) / np.float32(10)).astype(np.float32)  # 0.0 .. 4.9


def test_stitch_snaps_sorts_and_covers_from_the_first_frame():
    spans = [("Lift", 2.04, 3.0), ("Grasp", 0.6, 2.0), ("", 1.0, 1.5), ("Place", 3.51, 9.0)]
    assert stitch(spans, TS, 8) == [(0, "Grasp"), (20, "Lift"), (35, "Place")]


def test_stitch_clamps_out_of_range_spans_and_drops_duplicate_starts():
    spans = [("Reach", -5.0, 1.0), ("Reach again", -1.0, 0.5), ("Open", 99.0, 120.0)]
    assert stitch(spans, TS, 8) == [(0, "Reach"), (49, "Open")]
    assert stitch([("x", float("nan"), 1.0)], TS, 8) == []


def test_stitch_keeps_repeats_and_caps_only_when_told_by_merging_the_shortest():
    spans = [("Grasp the cup", 0, 1), ("grasp  the CUP", 1, 2), ("Lift it", 2.0, 2.2)]
    spans.append(("Place it", 2.2, 4.9))
    # A grasp tried again is its own event: the same words twice stay two subtasks.
    whole = [(0, "Grasp the cup"), (10, "grasp the CUP"), (20, "Lift it"), (22, "Place it")]
    assert stitch(spans, TS, 0) == stitch(spans, TS, 8) == whole
    # "Lift it" (0.2 s) is the shortest; its shorter neighbour is the 1 s grasp.
    assert stitch(spans, TS, 3) == [
        (0, "Grasp the cup"),
        (10, "grasp the CUP, then lift it"),
        (22, "Place it"),
    ]
    assert stitch(spans, TS, 1) == [
        (0, "Grasp the cup, then grasp the CUP, then lift it, then place it")
    ]


def test_stitch_merges_subtasks_shorter_than_the_minimum():
    spans = [("Grasp the cup", 0, 1), ("Lift it", 2.0, 2.2), ("Place it", 2.2, 4.9)]
    assert stitch(spans, TS, 8, min_seconds=0.5) == [
        (0, "Grasp the cup, then lift it"),
        (22, "Place it"),
    ]
    assert stitch(spans, TS, 8, min_seconds=60) == [
        (0, "Grasp the cup, then lift it, then place it")
    ]


def test_describe_answer_fits_its_budget_at_max_video_frames():
    # The longest answer the schema sent at max_video_frames allows: every entry at its
    # longest observation and a long timestamp. It must fit the describe budget.
    from episcribe.modules.plan.run import DESCRIBE_ENTRIES
    from episcribe.vlm.sizing import text_tokens

    prompt = PromptSet(PROMPTS).get("describe")
    entries = min(DEFAULTS["plan"]["max_video_frames"], DESCRIBE_ENTRIES)
    schema = prompt.schema_with_items("narration", 1, entries)
    item = schema["properties"]["narration"]["items"]["properties"]
    longest = {"time": 1234.567, "observation": "w" * item["observation"]["maxLength"]}
    answer = {"narration": [longest] * schema["properties"]["narration"]["maxItems"]}
    assert text_tokens(json.dumps(answer)) <= DEFAULTS["vlm"]["max_completion_tokens"]["describe"]


def test_segment_continues_the_describe_conversation_so_frames_are_cached(synth_small, tmp_path):
    settings = settings_for("plan", subtask_describe_first=True)
    with run_fake(tmp_path) as (base, log):
        result = run_module("plan", synth_small, 0, base, tmp_path / "m.jsonl", settings=settings)
        calls = {e["kind"]: e for e in read_log(log)}
    assert result.style("subtask")
    describe, segment = calls["describe"], calls["segment"]
    # The segment request is the describe request, its answer, then the segment words:
    # everything of the describe request is a cached prefix.
    assert segment["n_images"] == describe["n_images"] > 0
    assert segment["cached_tokens"] == describe["prompt_tokens"]


def test_join_steps_reads_as_one_instruction():
    assert join_steps("Grasp the cup.", "Lift it up") == "Grasp the cup, then lift it up"


def test_snap_indices_picks_nearest_real_frame_vectorised():
    assert snap_indices(TS, [-1.0, 0.04, 0.06, 2.5, 100.0]).tolist() == [0, 0, 1, 25, 49]
    times = sample_times(TS, float(TS[0]), float(TS[-1]), 3.0)
    assert set(times) <= {float(t) for t in TS} and len(times) == len(set(times)) == 15


def test_plan_windows_split_when_frames_exceed_the_cap():
    windows = plan_windows(TS, 2.0, 4, 0, 2)
    flat = sorted({t for w in windows for t in w})
    assert all(1 <= len(w) <= 4 for w in windows)
    assert flat[0] == 0.0 and flat[-1] == float(TS[-1])
    assert all(len(set(a) & set(b)) >= 2 for a, b in zip(windows, windows[1:], strict=False))
    assert len(plan_windows(TS, 1.0, 32, 0, 20)) == 1
    # Fixed windows of 2 s, each extended by the overlap into the next.
    assert [len(w) for w in plan_windows(TS, 1.0, 32, 2.0, 1)] == [3, 3, 2]


def test_placeholder_tasks_are_recognised():
    for task in ("", "test", "  DEBUG ", "n/a", "pick up", "TODO."):
        assert is_placeholder_task(task), task
    assert not is_placeholder_task("Pick up the yellow bottle")


def test_rng_for_is_stable_and_independent_of_python_hash():
    assert rng_for(1729, 3, "vqa").random() == rng_for(1729, 3, "vqa").random()
    assert rng_for(1729, 3, "vqa").random() != rng_for(1729, 4, "vqa").random()
    assert rng_for(1729, 0, "interjections").randrange(10**9) == 972095831


def test_frame_sheets_asked_twice_are_decoded_and_encoded_once(synth_small):
    # describe + segment (and derive_task over the same window) send the same sheets.
    dataset = LeRobotDataset.open(synth_small)
    episode = dataset.load_episode(1)
    frames = FrameSource(dataset, episode, DEFAULTS["vlm"])
    camera, times = dataset.cameras[0], [float(t) for t in episode.timestamps[::5]]
    grid = SheetGrid(2, 2, 160)

    async def go():
        first, again = await asyncio.gather(
            frames.sheets(camera, times, grid), frames.sheets(camera, times, grid)
        )
        later = await frames.sheets(camera, times, grid)
        single = await frames.sheets(camera, times[:2], 1)
        return first, again, later, single

    first, again, later, single = asyncio.run(go())
    n_sheets = -(-len(times) // 4)
    assert first == again == later and len(first[0]) == n_sheets
    assert len(single[0]) == 2
    assert frames.decoded == len(times)  # the 2 single frames come from the frame cache
    assert frames.encoded == n_sheets + 2

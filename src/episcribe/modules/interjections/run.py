"""The interjections module: the robot's first acknowledgement, and user interjections.

Per episode (event rows):

- a speech atom at the first frame: the robot's short acknowledgement of the task
  (``initial_speech``, text only);
- interjections at subtask boundaries: the plan module's subtask starts except the first,
  at least ``interjection_min_t`` seconds after the first frame. Up to
  ``max_interjections_per_episode`` of them are drawn with the RNG seeded from
  (seed, episode, "interjections"), and each gets a Hi Robot scenario type (negative task,
  situated correction, specific constraint, preference) from the same RNG. One
  ``interjection`` call per boundary sees frames straddling it (2 before, the boundary, 3
  after, each its own image with the timestamp burned in) plus the subtask just finished
  and the one that follows, and writes what a person says, which must ask for exactly what
  the robot then visibly does (the recording cannot change), and the robot's spoken reply.
  It becomes an ``interjection`` row (role user) and a speech atom, both at the boundary's
  exact frame timestamp, moved to the first later frame no VQA pair holds when one does
  (``placement``: LeRobot trains one event kind per frame; the ``vqa_frames`` setting,
  filled in by the workflow when vqa runs, says where its pairs go). A failed or empty
  answer emits neither (skipped, counted).

All calls of an episode are in flight at once.
"""

from __future__ import annotations

import asyncio
import logging

from episcribe.lerobot.language import make_row, speech_atom
from episcribe.modules.base import (
    EpisodeContext,
    clean_text,
    format_times,
    frame_time,
    rng_for,
    snap_indices,
    upstream_subtasks,
    upstream_task,
)
from episcribe.modules.interjections import WINDOW_OFFSETS
from episcribe.modules.placement import interjection_frames, vqa_cameras, vqa_frame_set

log = logging.getLogger(__name__)

MODULE = "interjections"
SCENARIOS = (
    (
        "negative task",
        "The person tells the robot what not to do, so that what is left to do is exactly "
        'what it does next (e.g. "Don\'t put it in the bowl, put it on the plate.").',
    ),
    (
        "situated correction",
        "The person corrects or redirects the robot based on what they see right now, "
        'toward what it then does (e.g. "Not that one, take the cup on your left.").',
    ),
    (
        "specific constraint",
        "The person adds a constraint on how to do the next step that the robot then "
        'visibly respects (e.g. "Keep the cup upright.", "Set it down gently.").',
    ),
    (
        "preference",
        "The person states a preference that the robot's next step satisfies "
        '(e.g. "I\'d like the yellow one first.").',
    ),
)


async def run_episode(ctx: EpisodeContext) -> list[dict]:
    s = ctx.settings
    ts = ctx.timestamps
    first = frame_time(ts, 0)
    task = upstream_task(ctx)
    subtasks = upstream_subtasks(ctx)
    chosen = choose_boundaries(
        ctx,
        [t for t, _ in subtasks],
        s["interjection_min_t"],
        s["max_interjections_per_episode"],
        vqa_frames_to_avoid(ctx, s.get("vqa_frames")),
    )
    rng = rng_for(ctx.seed, ctx.episode.index, MODULE + ":scenario")
    scenarios = [rng.choice(SCENARIOS) for _ in chosen]

    async def initial() -> list[dict]:
        answer = await ctx.ask("initial_speech", {"task": task or "(not given)"})
        speech = clean_text((answer or {}).get("speech"))
        if not speech:
            ctx.skip("initial_speech answer")
            return []
        return [speech_atom(speech, first)]

    async def interject(boundary: float, scenario: tuple[str, str]) -> list[dict]:
        previous, following = subtask_context(subtasks, boundary)
        times = window_times(ts, boundary)
        urls, layout = await ctx.frames.sheets(ctx.camera, times, 1)
        fields = {
            "task": task or "(not given)",
            "camera": ctx.camera,
            "layout": layout,
            "timestamps": format_times(times),
            "boundary": f"{boundary:.3f}",
            "previous_subtask": previous,
            "next_subtask": following,
            "scenario": scenario[0],
            "scenario_hint": scenario[1],
        }
        answer = await ctx.ask("interjection", fields, urls)
        said = clean_text((answer or {}).get("interjection"))
        reply = clean_text((answer or {}).get("speech"))
        if not said or not reply:
            ctx.skip(f"interjection answer at {boundary:.3f}s")
            return []
        return [make_row("user", said, "interjection", boundary), speech_atom(reply, boundary)]

    parts = await asyncio.gather(
        initial(), *(interject(b, sc) for b, sc in zip(chosen, scenarios, strict=True))
    )
    return [row for part in parts for row in part]


def choose_boundaries(
    ctx: EpisodeContext,
    starts: list[float],
    min_t: float,
    max_n: int,
    avoid: set[int] = frozenset(),
) -> list[float]:
    """The boundaries that get an interjection: seeded sample, in time order, real frames,
    each moved off the frames in ``avoid``."""
    ts = ctx.timestamps
    if not starts or max_n <= 0:
        return []
    first = frame_time(ts, 0)
    indices = sorted(set(snap_indices(ts, starts).tolist()) - {0})
    candidates = [i for i in indices if frame_time(ts, i) - first >= min_t - 1e-6]
    rng = rng_for(ctx.seed, ctx.episode.index, MODULE)
    chosen = sorted(rng.sample(candidates, min(max_n, len(candidates))))
    return [frame_time(ts, i) for i in interjection_frames(chosen, avoid, len(ts))]


def vqa_frames_to_avoid(ctx: EpisodeContext, vqa: dict | None) -> set[int]:
    """The frames the vqa module puts its pairs on (none when it does not run)."""
    if not vqa:
        return set()
    cameras = vqa_cameras(ctx, vqa["restrict_to_default_camera"])
    return vqa_frame_set(ctx.timestamps, vqa["vqa_emission_hz"], len(cameras))


def subtask_context(subtasks: list[tuple[float, str]], boundary: float) -> tuple[str, str]:
    """(the subtask just finished, the one the interjection asks for) at ``boundary``: the
    latter is the one active there (a boundary moved off a VQA frame lies a frame or two
    into it)."""
    active = max(sum(1 for t, _ in subtasks if t <= boundary + 1e-6) - 1, 0)
    before = [text for _, text in subtasks[:active]]
    after = [text for _, text in subtasks[active:]]
    return (
        before[-1] if before else "(starting)",
        after[0] if after else "(finishing the task)",
    )


def window_times(ts, boundary: float) -> list[float]:
    """Real frame times around ``boundary`` (which is itself one), distinct, in order."""
    targets = [boundary + off for off in WINDOW_OFFSETS]
    idx = sorted(set(snap_indices(ts, targets).tolist()))
    return [frame_time(ts, i) for i in idx]

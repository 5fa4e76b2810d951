"""The plan_update module: a refreshed ``plan`` row at every interjection (persistent).

For each interjection row of the interjections module, one text-only ``plan_refresh`` call
gets the task, the subtasks already done, the subtasks still planned from that moment (the
plan module's subtasks: the one active at the interjection and all later ones) and the
interjection's words, and answers the steps still to do. The row is the numbered list at
the interjection's exact timestamp. The validator requires a plan row at every
interjection, so a failed or empty answer falls back to the still-planned subtasks (or
the task, without subtasks): logged and counted, never left out. Reads no settings.
"""

from __future__ import annotations

import asyncio
import logging

from episcribe.lerobot.language import make_row
from episcribe.modules.base import (
    EpisodeContext,
    clean_text,
    numbered,
    upstream_subtasks,
    upstream_task,
)

log = logging.getLogger(__name__)

MODULE = "plan_update"
TIME_EPS = 1e-6


async def run_episode(ctx: EpisodeContext) -> list[dict]:
    task = upstream_task(ctx)
    subtasks = upstream_subtasks(ctx)
    interjections = sorted(
        (float(r["timestamp"]), r["content"])
        for r in ctx.upstream.get("interjections", [])
        if r.get("style") == "interjection" and isinstance(r.get("content"), str)
    )
    prompt = ctx.prompts.get("plan_refresh")

    async def refresh(t: float, said: str) -> dict:
        active = max((k for k, (s, _) in enumerate(subtasks) if s <= t + TIME_EPS), default=0)
        done = [text for _, text in subtasks[:active]]
        remaining = [text for _, text in subtasks[active:]]
        fields = {
            "task": task or "(not given)",
            "done": numbered(done) if done else "(none yet)",
            "remaining": numbered(remaining) if remaining else "(none)",
            "n_remaining": len(remaining),
            "interjection": said,
        }
        answer = await ctx.ask("plan_refresh", fields, schema=_schema(prompt, len(remaining)))
        steps = [clean_text(step) for step in (answer or {}).get("plan", [])]
        steps = [step for step in steps if step]
        if not steps:
            ctx.skip(f"plan_refresh answer at {t:.3f}s")
            steps = remaining or [task or said]
            log.warning(
                "episode %06d: no usable plan refresh at %.3fs; the planned steps stand",
                ctx.episode.index,
                t,
            )
        return make_row("assistant", numbered(steps), "plan", t)

    return list(await asyncio.gather(*(refresh(t, said) for t, said in interjections)))


def _schema(prompt, n_remaining: int) -> dict:
    """As many steps as are still planned: the recording shows exactly those being done."""
    if n_remaining <= 0:
        return prompt.schema
    return prompt.schema_with_items("plan", n_remaining, n_remaining)

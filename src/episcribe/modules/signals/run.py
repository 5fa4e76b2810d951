"""The signals module: keystates and ``motion`` rows from the robot's own state (no model).

Reads the episode's ``signals.source`` vector feature, recognises its channels by their
names in ``meta/info.json`` (``episcribe.modules.signals.analysis``), and returns

- one ``keystate`` row (staging only, see ``staging``) per keystate, at its frame;
- one ``motion`` row (persistent, role assistant) at every change of motion primitive
  ("close the right hand", "move the arm up and forward", "hold the arm still"), an
  arm's primitives lasting at least ``signals.motion_min_seconds``. At most one per timestamp
  and every row on a frame of the episode, as LeRobot's ``active_at(style=motion)`` needs.

A dataset whose names identify no channel gets a logged note and no rows, never a guess.
"""

from __future__ import annotations

import logging

from episcribe.errors import ConfigError
from episcribe.lerobot.language import make_row
from episcribe.lerobot.resolvers import EMITTED_AT_TOLERANCE_S
from episcribe.modules.base import EpisodeContext, frame_time
from episcribe.modules.signals import analysis as signals

log = logging.getLogger(__name__)

_noted: set[tuple[str, str]] = set()  # (dataset, feature) already explained in this job


async def run_episode(ctx: EpisodeContext) -> list[dict]:
    s = ctx.settings
    if not s["gripper_low"] < s["gripper_high"]:
        raise ConfigError(
            f"signals.gripper_low ({s['gripper_low']}) must be below signals.gripper_high "
            f"({s['gripper_high']}): the band between them is what tells closed from open"
        )
    key = s["source"]
    names = signals.feature_names(ctx.dataset.info, key)
    channels = signals.find_channels(names or [])
    if channels.empty():
        _note_once(ctx, key, names)
        return []
    values = ctx.dataset.load_vectors(ctx.episode.index, key)
    if names is not None and values.shape[1] != len(names):
        log.warning(
            "episode %06d: %s has %d channels but info.json names %d; no signal rows",
            ctx.episode.index,
            key,
            values.shape[1],
            len(names),
        )
        return []
    ts = ctx.timestamps
    found = signals.analyse(values, channels, s, ctx.dataset.fps)
    rows = [
        make_row("assistant", k.content(), "keystate", frame_time(ts, k.frame))
        for k in found.keystates
    ]
    # Two arms' changes close together would give motion rows closer than LeRobot's
    # emitted_at tolerance; such a sliver joins a neighbour.
    min_frames = int(EMITTED_AT_TOLERANCE_S * ctx.dataset.fps) + 1
    for frame, phrase in signals.primitive_runs(found.primitives, min_frames):
        rows.append(make_row("assistant", phrase, "motion", frame_time(ts, frame)))
    log.info(
        "episode %06d: %d keystates (%s), %d motion rows",
        ctx.episode.index,
        len(found.keystates),
        ", ".join(f"{k.kind} {k.arm}".strip() + f" @{k.frame}" for k in found.keystates) or "none",
        len(rows) - len(found.keystates),
    )
    return rows


def _note_once(ctx: EpisodeContext, key: str, names) -> None:
    if (str(ctx.dataset.root), key) in _noted:
        return
    _noted.add((str(ctx.dataset.root), key))
    if names is None:
        why = f"meta/info.json gives feature {key!r} no channel names"
    else:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        why = f"none of the names of {key!r} ({shown}) is a gripper, hand or arm joint"
    log.warning(
        "%s: %s, so there are no keystates or motion rows (set signals.source to another "
        "feature, or signals.enabled=false)",
        ctx.dataset.root,
        why,
    )

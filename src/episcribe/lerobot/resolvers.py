"""What LeRobot's language resolvers need of the rows, checked before anything is written.

LeRobot's recipe renderer (``lerobot.datasets.language_render``, which a policy's data
loader calls for every frame it trains on) binds each template slot with a resolver,
and a resolver that matches more than one row raises instead of choosing:

- ``active_at(t, style=S[, role, camera])`` (persistent styles): the rows of S at the
  latest timestamp <= t. The default bindings (``subtask``, ``plan``, ``memory``) name no
  role or camera, so at one timestamp there may be at most one persistent row per style.
  ``task_aug`` is exempt: the task binding picks one of all its rows by sample index.
- ``emitted_at(t, style=S, role=R, camera=C, tool_name=N)`` on event styles: every event
  row of frame t that matches. So at one frame at most one row per (style, role, camera),
  and at most one ``assistant`` row carrying a ``say`` tool call: the default ``speech``
  binding selects on role and tool name alone, whatever the style.
- ``emitted_at`` on a persistent style matches rows within ``EMITTED_AT_TOLERANCE_S`` of
  t (a margin for arithmetic drift of t). Two rows of one persistent style that close
  together make it raise; the default bindings never call it on persistent styles, so
  this is a warning, not an error.

A caveat no check here can settle: the default ``vqa`` binding names no camera, so a
recipe that does not bind VQA per camera (LeRobot's own VQA recipes do) raises on frames
where two cameras have VQA rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from episcribe.lerobot.language import PERSISTENT_STYLES, is_speech_atom

EMITTED_AT_TOLERANCE_S = 0.1
ROTATED_STYLES = frozenset({"task_aug"})  # resolved all together, never one at a time


@dataclass(frozen=True)
class Conflict:
    fatal: bool  # True: the renderer raises at every frame that reaches it
    module: str
    timestamp: float
    message: str


def _says(row: Mapping) -> bool:
    return row.get("role") == "assistant" and (is_speech_atom(row) or _has_say_call(row))


def _has_say_call(row: Mapping) -> bool:
    return any(
        isinstance(c, Mapping) and (c.get("function") or {}).get("name") == "say"
        for c in row.get("tool_calls") or ()
    )


def _origin(modules: Iterable[str]) -> str:
    names = sorted(set(modules))
    return names[0] if len(names) == 1 else "+".join(names)


def resolver_conflicts(rows: Iterable[tuple[str, Mapping]]) -> list[Conflict]:
    """Every tie among one episode's rows as written: ``(module, row)`` pairs whose
    ``timestamp`` is already float32-rounded (see ``staging.merge_modules``)."""
    persistent: dict[tuple, list[str]] = defaultdict(list)
    events: dict[tuple, list[str]] = defaultdict(list)
    speech: dict[float, list[tuple]] = defaultdict(list)  # ts -> (module, style, camera)
    for module, row in rows:
        ts, style = row["timestamp"], row.get("style")
        if style in PERSISTENT_STYLES:
            if style not in ROTATED_STYLES:
                persistent[(style, ts)].append(module)
            continue
        events[(ts, style, row.get("role"), row.get("camera"))].append(module)
        if _says(row):
            speech[ts].append((module, style, row.get("camera")))

    out: list[Conflict] = []
    for (style, ts), modules in persistent.items():
        if len(modules) > 1:
            out.append(
                Conflict(
                    True,
                    _origin(modules),
                    ts,
                    f"{len(modules)} {style!r} rows at one timestamp: LeRobot's "
                    f"active_at(style={style}) cannot choose between them",
                )
            )
    for (ts, style, role, camera), modules in events.items():
        if len(modules) > 1:
            shown = "null" if style is None else repr(style)
            out.append(
                Conflict(
                    True,
                    _origin(modules),
                    ts,
                    f"{len(modules)} event rows of style {shown}, role {role!r}, camera "
                    f"{camera!r} at one frame: LeRobot's emitted_at cannot choose between them",
                )
            )
    for ts, says in speech.items():
        # Two say rows of one (style, camera) are already a tie of the events above.
        if len({(style, camera) for _, style, camera in says}) > 1:
            out.append(
                Conflict(
                    True,
                    _origin(m for m, _, _ in says),
                    ts,
                    f"{len(says)} assistant rows with a say tool call at one frame: LeRobot's "
                    "speech binding (emitted_at role=assistant, tool_name=say) cannot choose",
                )
            )
    ordered = sorted(persistent, key=lambda k: (k[0], k[1]))
    for (style, earlier), (next_style, later) in zip(ordered, ordered[1:], strict=False):
        if style == next_style and later - earlier < EMITTED_AT_TOLERANCE_S:
            out.append(
                Conflict(
                    False,
                    _origin(persistent[(style, later)]),
                    later,
                    f"{style!r} rows {later - earlier:.3f} s apart (at {earlier:.3f} s "
                    f"and {later:.3f} s): LeRobot's emitted_at(style={style}) matches "
                    f"within {EMITTED_AT_TOLERANCE_S} s and would see both",
                )
            )
    return sorted(out, key=lambda c: (c.timestamp, c.module, c.message))

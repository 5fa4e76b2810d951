"""LeRobot's recipe resolvers, restated for the tests from their documented behaviour.

Written from a reading of ``lerobot.datasets.language_render`` (``active_at``,
``emitted_at``, ``_select_one``) and the default bindings of ``lerobot.configs.recipe``;
independent of episcribe's own validator, so the two can disagree and a test can fail.
LeRobot itself cannot be installed here (it needs torch), so this is the stand-in.

``frame_ties`` resolves, at every frame of a written data shard, every binding a recipe
can ask with the selectors our rows carry, and returns the frames where one of them
matches more than one row (where LeRobot raises "Ambiguous resolver").
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

PERSISTENT_STYLES = {"subtask", "plan", "memory", "motion", "task_aug"}
ROTATED = {"task_aug"}  # the task binding draws one of them by sample index


def _says(row: dict) -> bool:
    return any(
        isinstance(call, dict) and (call.get("function") or {}).get("name") == "say"
        for call in row.get("tool_calls") or []
    ) or any(isinstance(call, str) and '"say"' in call for call in row.get("tool_calls") or [])


def active_at_matches(t: float, persistent: list[dict], **selector) -> int:
    """How many rows ``active_at(t, **selector)`` would have to choose from."""
    rows = [
        r
        for r in persistent
        if all(r.get(k) == v for k, v in selector.items()) and r["timestamp"] <= t
    ]
    if not rows:
        return 0
    latest = max(r["timestamp"] for r in rows)
    return sum(1 for r in rows if r["timestamp"] == latest)


def emitted_at_matches(events: list[dict], *, says: bool = False, **selector) -> int:
    return sum(
        1
        for r in events
        if all(r.get(k) == v for k, v in selector.items()) and (not says or _says(r))
    )


def frame_ties(shard: Path) -> list[tuple[int, float, str]]:
    """(episode, timestamp, binding) for every frame and binding that would raise."""
    table = pq.read_table(
        shard, columns=["episode_index", "timestamp", "language_persistent", "language_events"]
    ).to_pylist()
    ties = []
    for frame in table:
        t = frame["timestamp"]
        persistent = frame["language_persistent"] or []
        events = frame["language_events"] or []
        bindings: dict[str, int] = {}
        for style in {r["style"] for r in persistent} - ROTATED:
            bindings[f"active_at(style={style})"] = active_at_matches(t, persistent, style=style)
            for role in {r["role"] for r in persistent if r["style"] == style}:
                bindings[f"active_at(style={style}, role={role})"] = active_at_matches(
                    t, persistent, style=style, role=role
                )
        bindings["speech"] = emitted_at_matches(events, role="assistant", says=True)
        bindings["interjection"] = emitted_at_matches(events, style="interjection")
        per_camera = defaultdict(set)
        for r in events:
            per_camera[r["style"]].add((r["role"], r["camera"]))
        for style, keys in per_camera.items():
            for role, camera in keys:
                bindings[f"emitted_at(style={style}, role={role}, camera={camera})"] = (
                    emitted_at_matches(events, style=style, role=role, camera=camera)
                )
        ties += [(frame["episode_index"], t, name) for name, n in bindings.items() if n > 1]
    return ties


def dataset_ties(root: Path) -> tuple[int, list[tuple[int, float, str]]]:
    """(frames checked, ties) over every data shard of a written dataset."""
    frames, ties = 0, []
    for shard in sorted((root / "data").rglob("*.parquet")):
        frames += pq.ParquetFile(shard).metadata.num_rows
        ties += frame_ties(shard)
    return frames, ties


def frame_routes(root: Path) -> list[dict]:
    """What LeRobot's recipe routing sees on every frame of a written dataset that carries
    events: the event styles there, the cameras of its VQA rows and whether the robot
    speaks (a ``say`` tool call). A VQA row routes the frame to the VQA sub-recipe."""
    routes = []
    for shard in sorted((root / "data").rglob("*.parquet")):
        columns = ["episode_index", "frame_index", "timestamp", "language_events"]
        for frame in pq.read_table(shard, columns=columns).to_pylist():
            events = frame["language_events"] or []
            if not events:
                continue
            routes.append(
                {
                    "episode": frame["episode_index"],
                    "frame": frame["frame_index"],
                    "styles": {r["style"] for r in events},
                    # one VQA pair is a user and an assistant row of one camera
                    "vqa_rows": sorted(r["camera"] for r in events if r["style"] == "vqa"),
                    "says": any(_says(r) for r in events),
                }
            )
    return routes

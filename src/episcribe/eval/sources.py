"""Gold and predicted segments, from any of the three places they live.

- **A JSONL file**, one line per episode: ``{"episode": N, "segments": [{"start_sec",
  "end_sec", "label"}, ...]}``, optionally ``"source_family"``, ``"duration_sec"`` and
  ``"task"``, ``"gold_labels"`` (a prediction's labels for the gold spans, in gold's order: what
  labeling accuracy scores). ``import-wgo`` writes gold this way.
- **A results directory** (``results/<dataset>``): its ``staging/`` rows, merged exactly as
  the writer merges them (``staging.merge_modules``). Besides the written subtasks
  (``written``) it yields the boundaries before keystate snapping (``unsnapped``: each
  ``snap`` row gives a boundary's time before the move) and the model's own spans before
  stitching (``model``: the plan module's ``model_segment`` rows).
- **An annotated LeRobot dataset** (a directory with ``meta/info.json``): the ``subtask``
  rows of its ``language_persistent`` column.
- **A review directory** (``results/<dataset>/review``, with the ``gold.jsonl`` that
  ``episcribe review`` keeps): the episodes a person accepted or corrected, as gold.

Subtask rows hold only a start: a subtask lasts until the next one starts, the last one
until the episode's last frame (the metric sets the outer edges to gold's anyway).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from episcribe.errors import UserError
from episcribe.eval.metrics import Segment
from episcribe.lerobot.language import PERSISTENT
from episcribe.pipeline.staging import MODULES, merge_modules, read_rows

WRITTEN = "written"
UNSNAPPED = "unsnapped"
MODEL = "model"
VIEW_NOTES = {
    WRITTEN: "the written subtasks",
    UNSNAPPED: "before keystate snapping",
    MODEL: "the model's spans before stitching",
}


class SourceError(UserError):
    """A gold or prediction file that cannot be read as segments."""


@dataclass
class Source:
    path: Path
    views: dict[str, dict[int, list[Segment]]]  # view name -> episode -> segments
    families: dict[int, str] = field(default_factory=dict)
    durations: dict[int, float] = field(default_factory=dict)
    gold_labels: dict[int, list[str]] | None = None
    results_dir: Path | None = None  # where the run's call records can be found
    tasks: dict[int, str] = field(default_factory=dict)

    @property
    def segments(self) -> dict[int, list[Segment]]:
        return self.views[WRITTEN]


def read_source(path: str | os.PathLike) -> Source:
    """Segments from a JSONL file, a results directory or an annotated dataset."""
    path = Path(path)
    if path.is_file():
        return read_jsonl(path)
    if (path / "gold.jsonl").is_file():
        return read_jsonl(path / "gold.jsonl")
    if (path / "staging").is_dir():
        return read_results(path)
    if (path / "meta" / "info.json").is_file():
        return read_dataset(path)
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    raise SourceError(
        f"{path} is neither a JSONL file, a results directory (with staging/), a review "
        "directory (with gold.jsonl) nor a LeRobot dataset (with meta/info.json)"
    )


def read_jsonl(path: Path) -> Source:
    segments: dict[int, list[Segment]] = {}
    families: dict[int, str] = {}
    durations: dict[int, float] = {}
    labels: dict[int, list[str]] = {}
    tasks: dict[int, str] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(item, dict) or not isinstance(item.get("episode"), int):
                raise SourceError(f'{where}: expected {{"episode": <int>, "segments": [...]}}')
            episode = item["episode"]
            if episode in segments:
                raise SourceError(f"{where}: episode {episode} appears twice")
            segments[episode] = [_segment(s, where) for s in item.get("segments") or []]
            if isinstance(item.get("source_family"), str):
                families[episode] = item["source_family"]
            if isinstance(item.get("duration_sec"), int | float):
                durations[episode] = float(item["duration_sec"])
            if isinstance(item.get("gold_labels"), list):
                labels[episode] = [str(x or "") for x in item["gold_labels"]]
            if isinstance(item.get("task"), str):
                tasks[episode] = item["task"]
    return Source(path, {WRITTEN: segments}, families, durations, labels or None, tasks=tasks)


def _segment(item: object, where: str) -> Segment:
    try:
        start, end = float(item["start_sec"]), float(item["end_sec"])  # type: ignore[index]
        label = item.get("label", item.get("subtask", ""))  # type: ignore[union-attr]
    except (TypeError, KeyError, ValueError):
        raise SourceError(
            f"{where}: a segment needs numeric start_sec and end_sec (got {item!r})"
        ) from None
    if end < start:
        raise SourceError(f"{where}: a segment ends ({end}) before it starts ({start})")
    return Segment(start, end, str(label or ""))


def read_results(results: Path) -> Source:
    views: dict[str, dict[int, list[Segment]]] = {WRITTEN: {}, UNSNAPPED: {}, MODEL: {}}
    for episode_dir in sorted((results / "staging").glob("episode_*")):
        try:
            episode = int(episode_dir.name.removeprefix("episode_"))
        except ValueError:
            continue
        by_module = {
            module: read_rows(episode_dir / f"{module}.jsonl")
            for module in MODULES
            if (episode_dir / f"{module}.jsonl").is_file()
        }
        if "plan" not in by_module:
            continue
        times = [float(r["timestamp"]) for rows in by_module.values() for r in rows]
        end = max(times, default=0.0)
        starts = sorted(
            (float(row["timestamp"]), row.get("content") or "")
            for _, row in merge_modules(by_module)
            if row.get("style") == "subtask"
        )
        views[WRITTEN][episode] = _cover(starts, end)
        moved = {}
        for row in by_module["plan"]:
            content = _json(row) if row.get("style") in ("snap", "model_segment") else {}
            if row.get("style") == "snap" and "from" in content:
                moved[float(row["timestamp"])] = float(content["from"])
            elif row.get("style") == "model_segment":
                views[MODEL].setdefault(episode, []).append(
                    Segment(float(content["start"]), float(content["end"]), content["instruction"])
                )
        views[UNSNAPPED][episode] = _cover(sorted((moved.get(t, t), c) for t, c in starts), end)
    if not any(views[MODEL].values()):
        del views[MODEL]  # staged before model_segment rows existed, or no plan module
    return Source(results, views, results_dir=results)


def _json(row: dict) -> dict:
    try:
        value = json.loads(row.get("content") or "")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _cover(starts: list[tuple[float, str]], end: float) -> list[Segment]:
    """Subtasks from their starts: each until the next start, the last until ``end``."""
    out = []
    for k, (start, label) in enumerate(starts):
        stop = starts[k + 1][0] if k + 1 < len(starts) else max(end, start)
        out.append(Segment(start, stop, label))
    return out


def read_dataset(root: Path) -> Source:
    info = json.loads((root / "meta" / "info.json").read_text(encoding="utf-8"))
    if PERSISTENT not in info.get("features", {}):
        raise SourceError(
            f"{root} has no {PERSISTENT} column: it is not an annotated dataset (give the "
            "annotated copy, e.g. results/<dataset>/annotated)"
        )
    starts: dict[int, list[tuple[float, str]]] = {}
    ends: dict[int, float] = defaultdict(float)
    for path in sorted((root / "data").glob("chunk-*/file-*.parquet")):
        table = pq.read_table(path, columns=["episode_index", "timestamp", PERSISTENT])
        episodes = table.column("episode_index").to_pylist()
        stamps = table.column("timestamp").to_pylist()
        for k, episode in enumerate(episodes):
            ends[episode] = max(ends[episode], float(stamps[k]))
            if episode not in starts:
                rows = table.column(PERSISTENT)[k].as_py() or []
                starts[episode] = sorted(
                    (float(r["timestamp"]), r.get("content") or "")
                    for r in rows
                    if r.get("style") == "subtask"
                )
    segments = {ep: _cover(s, ends[ep]) for ep, s in starts.items()}
    return Source(root, {WRITTEN: segments})

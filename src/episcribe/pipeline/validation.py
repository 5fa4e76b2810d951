"""Check staged annotations before anything is written to the dataset.

Every problem is a ``Problem(severity, episode, module, timestamp, message)``, so the
report can be filtered and read per episode. Checks (SPEC §6):

Errors (the write is refused unless ``skip_validation``):
- a staging file is missing for an enabled module, or cannot be read;
- a row is malformed: missing or non-string ``role``, non-numeric ``timestamp``,
  ``content``/``style``/``camera`` not a string or null, ``tool_calls`` not a list of
  objects or null (all of which the writer's Arrow cast would reject);
- a row's style is unknown, or not one its module may emit (wrong column for the module);
- a staging-only row (``keystate``, ``snap``, ``model_segment``) off the episode's frames
  or whose content is not a JSON object (these rows are never written);
- the camera rule: ``vqa``/``trace`` rows need a camera the dataset has, every other
  style has ``camera = null``;
- a row with neither content nor tool calls; a ``style = null`` row without tool calls;
- an event row whose timestamp is not exactly (as float32) one of the episode's frames;
  a persistent row whose timestamp lies before the first or after the last frame
  (it would never, or always, be the active one);
- an interjection without a speech atom at the same timestamp;
- an interjection without a ``plan`` row at the same timestamp (from plan or plan_update);
- a VQA assistant row whose content is not JSON in one of the five answer shapes;
- two rows that tie for LeRobot's resolvers (``resolvers.py`` states each resolver's rule),
  checked on the rows as written, after ``staging.merge_modules``.

Warnings (reported, never blocking):
- persistent rows but no ``plan`` row in the episode;
- a ``memory`` row that is not at a subtask start;
- VQA pixel coordinates outside the camera's image (when the video size is known);
- two rows of one persistent style less than 0.1 s apart (``resolvers.py``);
- an episode whose answers were skipped (the model call failed): the staged rows lack
  them, and the next run asks the model again (``annotate`` never caches such an episode);
- a frame carrying a VQA pair beside a spoken exchange, or VQA pairs of two cameras
  (``event_frames``: LeRobot trains only one event kind per frame), named by episode and
  frame and counted in the report (``frames_sharing_events``).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from episcribe.atomic import write_json, write_text
from episcribe.errors import UserError
from episcribe.lerobot.event_frames import SHARED_FRAME, frame_events, shared_frame_message
from episcribe.lerobot.language import (
    CAMERA_STYLES,
    EVENT_STYLES,
    PERSISTENT_STYLES,
    STAGING_STYLES,
    column_for_style,
    float32_or_none,
    float32_timestamp,
    is_speech_atom,
)
from episcribe.lerobot.resolvers import resolver_conflicts
from episcribe.modules import registry
from episcribe.modules.vqa.answers import answer_points, vqa_answer_problem
from episcribe.pipeline.cache import incomplete_episodes
from episcribe.pipeline.outcomes import module_totals
from episcribe.pipeline.staging import (
    MODULES,
    merge_modules,
    read_review,
    read_rows,
    staging_file,
)

log = logging.getLogger(__name__)

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" | "warning"
    episode: int | None
    module: str | None
    timestamp: float | None
    message: str

    def sort_key(self) -> tuple:
        return (
            -1 if self.episode is None else self.episode,
            self.module or "",
            float("-inf") if self.timestamp is None else self.timestamp,
            self.severity,
            self.message,
        )

    def to_text(self) -> str:
        parts = []
        if self.episode is not None:
            parts.append(f"episode {self.episode}")
        if self.module:
            parts.append(self.module)
        if self.timestamp is not None:
            parts.append(f"t={self.timestamp:.3f}")
        parts.append(f"{self.severity}: {self.message}")
        return " · ".join(parts)


# --- per-episode checks ----------------------------------------------------------------


def _row_shape_problems(row: Any) -> list[str]:
    if not isinstance(row, Mapping):
        return [f"row is not a JSON object: {row!r:.80}"]
    out = []
    if not isinstance(row.get("role"), str) or not row.get("role"):
        out.append(f"role must be a non-empty string, got {row.get('role')!r}")
    ts = row.get("timestamp")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not np.isfinite(ts):
        out.append(f"timestamp must be a finite number, got {ts!r}")
    for key in ("content", "style", "camera"):
        if row.get(key) is not None and not isinstance(row[key], str):
            out.append(f"{key} must be a string or null, got {type(row[key]).__name__}")
    calls = row.get("tool_calls")
    if calls is not None and (
        not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls)
    ):
        out.append("tool_calls must be a list of objects or null")
    return out


def validate_episode(
    episode: Any, cameras: Iterable[str], rows_by_module: Mapping[str, Sequence[Mapping]]
) -> list[Problem]:
    """All problems of one episode's staged rows (``rows_by_module``: module -> rows)."""
    index = int(episode.index)
    cameras = set(cameras)
    frame_times = np.asarray(episode.timestamps, dtype=np.float32).tolist()
    frame_of = {float32_timestamp(t): i for i, t in enumerate(frame_times)}
    first, last = (frame_times[0], frame_times[-1]) if frame_times else (0.0, -1.0)
    sizes = {}
    for cam, seg in (getattr(getattr(episode, "info", None), "videos", None) or {}).items():
        sizes[cam] = (seg.width, seg.height)
    problems: list[Problem] = []

    def add(severity: str, module: str | None, ts: float | None, message: str) -> None:
        problems.append(Problem(severity, index, module, ts, message))

    # Rows that passed the structural checks: (module, row with float32 time, staged row).
    good: list = []
    for module, rows in rows_by_module.items():
        allowed = registry.MODULES[module].styles if module in registry.MODULES else None
        if allowed is None:
            add(ERROR, module, None, f"unknown module {module!r}")
            continue
        for row in rows:
            shape = _row_shape_problems(row)
            ts = float32_or_none(row.get("timestamp") if isinstance(row, Mapping) else None)
            if shape:
                for msg in shape:
                    add(ERROR, module, ts, msg)
                continue
            style = row.get("style")
            try:
                if style not in STAGING_STYLES:
                    column_for_style(style)
            except ValueError:
                add(ERROR, module, ts, f"unknown style {style!r}")
                continue
            if style not in allowed:
                shown = sorted("null" if s is None else s for s in allowed)
                add(
                    ERROR,
                    module,
                    ts,
                    f"style {style!r} may not come from module {module!r} (allowed: {shown})",
                )
                continue
            if style in STAGING_STYLES:
                problem = _staging_only_problem(row, frame_of)
                if problem:
                    add(ERROR, module, ts, problem)
                continue  # never written: no resolver or column rule applies
            cam = row.get("camera")
            if style in CAMERA_STYLES:
                if not cam:
                    add(ERROR, module, ts, f"{style} row needs a camera")
                elif cam not in cameras:
                    add(
                        ERROR,
                        module,
                        ts,
                        f"camera {cam!r} is not a camera of the dataset ({sorted(cameras)})",
                    )
            elif cam is not None:
                shown = "null" if style is None else repr(style)
                add(ERROR, module, ts, f"camera must be null for style {shown}, got {cam!r}")
            if row.get("content") is None and not row.get("tool_calls"):
                add(ERROR, module, ts, "row has neither content nor tool_calls")
            elif style is None and not row.get("tool_calls"):
                add(ERROR, module, ts, "a row with style null must carry tool_calls")
            if style in EVENT_STYLES and ts not in frame_of:
                add(
                    ERROR,
                    module,
                    ts,
                    f"event timestamp {row['timestamp']!r} is not one of the episode's "
                    "frame timestamps",
                )
            elif not first <= ts <= last:
                add(
                    ERROR,
                    module,
                    ts,
                    f"timestamp {row['timestamp']!r} lies outside the episode "
                    f"({first:.3f} s to {last:.3f} s)",
                )
            good.append((module, {**row, "timestamp": ts}, row))

    # From here on, the rows as the dataset gets them.
    kept = {id(row) for _, row in merge_modules(rows_by_module)}
    good = [(module, row) for module, row, original in good if id(original) in kept]
    speech_ts = {r["timestamp"] for _, r in good if is_speech_atom(r)}
    plan_ts = {r["timestamp"] for _, r in good if r["style"] == "plan"}
    subtask_ts = {r["timestamp"] for _, r in good if r["style"] == "subtask"}
    for module, row in good:
        ts, style = row["timestamp"], row["style"]
        if style == "interjection":
            if ts not in speech_ts:
                add(ERROR, module, ts, "interjection without a speech atom at the same timestamp")
            if ts not in plan_ts:
                add(ERROR, module, ts, "interjection without a plan row at the same timestamp")
        elif style == "vqa":
            if row["role"] == "assistant":
                problem = vqa_answer_problem(row["content"])
                if problem:
                    add(ERROR, module, ts, problem)
                elif row["camera"] in sizes:
                    w, h = sizes[row["camera"]]
                    pts = answer_points(json.loads(row["content"]))
                    if any(not (0 <= x <= w and 0 <= y <= h) for x, y in pts):
                        add(
                            WARNING,
                            module,
                            ts,
                            f"VQA coordinates outside the {w}x{h} image of {row['camera']}",
                        )
        elif style == "memory" and ts not in subtask_ts:
            add(WARNING, module, ts, "memory row is not at a subtask start")
    for ts, events in frame_events(r for _, r in good).items():
        if events.shared:
            add(WARNING, "vqa", ts, shared_frame_message(events, frame_of.get(ts)))
    for conflict in resolver_conflicts(good):
        severity = ERROR if conflict.fatal else WARNING
        add(severity, conflict.module, conflict.timestamp, conflict.message)

    if any(r["style"] in PERSISTENT_STYLES for _, r in good) and not plan_ts:
        add(WARNING, None, None, "persistent rows but no plan row in this episode")
    return sorted(problems, key=Problem.sort_key)


def _staging_only_problem(row: Mapping, frames: Container[float]) -> str | None:
    """A staging-only row must sit on a frame and hold a JSON object."""
    if float32_timestamp(row["timestamp"]) not in frames:
        return f"{row['style']} timestamp {row['timestamp']!r} is not one of the episode's frames"
    try:
        value = json.loads(row.get("content") or "")
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        return f"{row['style']} row content must be a JSON object, got {row.get('content')!r}"
    return None


# --- the report ------------------------------------------------------------------------


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # rows per style ("null" = speech)
    episodes: list[int] = field(default_factory=list)  # episodes checked
    reviewed: list[int] = field(default_factory=list)  # episodes with a person's corrections
    dataset_root: str = ""  # what `episcribe review <results dir>` opens
    model_calls: dict[str, dict] = field(default_factory=dict)  # outcomes.module_totals

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def frames_sharing_events(self) -> int:
        """Frames whose events are not all trained (event_frames)."""
        return sum(p.message.startswith(SHARED_FRAME) for p in self.warnings)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "episodes_checked": len(self.episodes),
            "episodes": list(self.episodes),
            "reviewed_episodes": list(self.reviewed),
            "dataset_root": self.dataset_root,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "frames_sharing_events": self.frames_sharing_events,
            "rows_per_style": dict(sorted(self.counts.items())),
            "model_calls": self.model_calls,
            "problems": [asdict(p) for p in self.problems],
        }

    def summary(self) -> str:
        rows = sum(self.counts.values())
        calls = sum(m["calls"] for m in self.model_calls.values())
        failed = sum(m["failures"] for m in self.model_calls.values())
        incomplete = sum(len(m["incomplete"]) for m in self.model_calls.values())
        losses = (
            f"; {failed} of {calls} model calls failed, {incomplete} incomplete episode rows "
            "(asked again next run)"
            if failed or incomplete
            else ""
        )
        return (
            f"{'OK' if self.ok else 'FAILED'}: {len(self.episodes)} episodes, {rows} rows, "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings{losses}"
        )

    def to_text(self) -> str:
        lines = [self.summary()]
        if self.frames_sharing_events:
            lines.append(
                f"frames sharing events: {self.frames_sharing_events} (a VQA pair beside a "
                "spoken exchange, or two cameras' VQA pairs: not all of it is trained)"
            )
        if self.counts:
            lines.append(
                "rows per style: " + ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            )
        for module, m in self.model_calls.items():
            lines.append(
                f"{module}: {m['calls']} model calls, {m['failures']} failed, {m['skipped']} "
                f"answers skipped; episodes: {m['annotated']} annotated, {m['cached']} from the "
                f"cache, {len(m['incomplete'])} incomplete {m['incomplete'] or ''}".rstrip()
            )
        lines += [p.to_text() for p in self.problems]
        return "\n".join(lines) + "\n"

    def write(self, json_path: str | os.PathLike, txt_path: str | os.PathLike) -> None:
        write_json(json_path, self.to_json())
        write_text(txt_path, self.to_text())


def load_staging(
    staging_dir: str | os.PathLike,
    episode: int,
    modules: Iterable[str],
    review_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, list[dict]], list[Problem]]:
    """Rows per module of one episode (``review`` too when it was reviewed), and a problem
    per missing or unreadable file."""
    modules = list(modules)
    rows_by_module: dict[str, list[dict]] = {}
    problems: list[Problem] = []
    try:
        rows_by_module.update(read_review(review_dir, episode, modules))
    except UserError as exc:
        problems.append(Problem(ERROR, episode, "review", None, str(exc)))
    for module in modules:
        path = staging_file(staging_dir, episode, module)
        if not Path(path).is_file():
            problems.append(
                Problem(
                    ERROR,
                    episode,
                    module,
                    None,
                    f"staging file {path} is missing for enabled module {module!r}; "
                    "run that module for this episode (or disable the module)",
                )
            )
            continue
        try:
            rows_by_module[module] = read_rows(path)
        except UserError as exc:
            problems.append(Problem(ERROR, episode, module, None, str(exc)))
    return rows_by_module, problems


def validate_staging(
    dataset: Any,
    staging_dir: str | os.PathLike,
    episodes: Iterable[int],
    modules: Iterable[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    job_summaries: Iterable[str | os.PathLike] = (),
    review_dir: str | os.PathLike | None = None,
) -> Report:
    """Validate the staging files of ``modules`` for ``episodes`` of ``dataset`` (and the
    review files in ``review_dir``, which replace rows as the writer will); with the
    annotate jobs' ``cache_dir`` and saved summaries, report their model calls and each
    episode staged with failed calls."""
    modules = list(modules)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        raise UserError(f"unknown module(s) {unknown}; expected some of {', '.join(MODULES)}")
    report = Report(
        model_calls=module_totals(job_summaries),
        dataset_root=str(Path(dataset.root).resolve()),
    )
    incomplete = {
        m: incomplete_episodes(cache_dir, m) if cache_dir is not None else {} for m in modules
    }
    counts: Counter = Counter()
    for index in episodes:
        index = int(index)
        episode = dataset.load_episode(index)
        rows_by_module, problems = load_staging(staging_dir, index, modules, review_dir)
        if "review" in rows_by_module:
            report.reviewed.append(index)
        report.problems += problems
        report.problems += validate_episode(episode, dataset.cameras, rows_by_module)
        for module in modules:
            record = incomplete[module].get(index)
            if record:
                report.problems.append(
                    Problem(
                        WARNING,
                        index,
                        module,
                        None,
                        f"incomplete: {record['failed_calls']} model calls failed and "
                        f"{record['skipped']} answers are missing from the staged rows; the "
                        "next run asks the model again for this episode",
                    )
                )
        for _, row in merge_modules(rows_by_module):  # rows as the dataset gets them
            style = row.get("style") if isinstance(row, Mapping) else None
            counts["null" if style is None else str(style)] += 1
        report.episodes.append(index)
    report.counts = dict(counts)
    report.problems.sort(key=Problem.sort_key)
    return report


def check_report(json_path: str | os.PathLike, *, skip_validation: bool) -> None:
    """Refuse to go on to writing when the saved report has errors (unless skipped)."""
    report = json.loads(Path(json_path).read_text(encoding="utf-8"))
    if report["ok"]:
        return
    errors = [p for p in report["problems"] if p["severity"] == ERROR]
    listed = "; ".join(Problem(**p).to_text() for p in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    text_report = Path(json_path).with_suffix(".txt")
    if skip_validation:
        log.warning(
            "writing despite %d validation errors (skip_validation): %s", len(errors), listed
        )
        return
    raise UserError(
        f"validation found {len(errors)} errors, so nothing was written: {listed}{more}. "
        f"The full report is {text_report}; fix the staging (or the prompts) and re-run, "
        "or set skip_validation=true to write anyway"
    )

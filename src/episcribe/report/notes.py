"""What an episode's staged rows say: subtask spans, markers and VQA pairs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from episcribe.lerobot.dataset import Episode, LeRobotDataset
from episcribe.modules.signals.analysis import parse_keystate
from episcribe.pipeline.staging import merge_modules, read_review, read_rows, staging_file

KIND_NAMES = {
    "plan": "PLAN",
    "memory": "MEMORY",
    "interjection": "USER",
    "say": "ROBOT SAYS",
}


@dataclass(frozen=True)
class Span:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Marker:
    t: float
    kind: str  # plan | memory | interjection | say
    text: str


@dataclass(frozen=True)
class KeyMark:
    """A keystate of the signals module: when, what, and whose lane it is drawn in."""

    t: float
    kind: str  # grasp | release | rest
    lane: str  # "right hand", "gripper", "left arm"


@dataclass
class VqaItem:
    t: float
    camera: str
    question: str
    answer: str  # the answer row's content, JSON text
    parsed: dict | None = None

    @property
    def shape(self) -> str:
        return answer_shape(self.parsed)

    @property
    def grounded(self) -> bool:
        return self.shape in ("bbox", "keypoint")


@dataclass
class EpisodeNotes:
    index: int
    task: str
    t0: float
    t_end: float
    frames: int
    subtasks: list[Span] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    vqa: list[VqaItem] = field(default_factory=list)
    task_aug: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # modules without a staging file
    keystates: list[KeyMark] = field(default_factory=list)

    @property
    def keystate_lanes(self) -> list[str]:
        """One lane per gripper/hand (and per arm that comes to rest), in a fixed order."""
        return sorted({k.lane for k in self.keystates}, key=lambda s: (s.endswith("arm"), s))

    @property
    def duration(self) -> float:
        return max(self.t_end - self.t0, 1e-6)


def one_line(text: str | None) -> str:
    return " ".join(str(text or "").split())


def say_text(row: Mapping[str, Any]) -> str | None:
    """The text of a ``say`` tool call (arguments as a dict or as JSON text)."""
    for call in row.get("tool_calls") or []:
        if not isinstance(call, Mapping):
            continue
        function = call.get("function") or {}
        if function.get("name") != "say":
            continue
        args = function.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return args
        if isinstance(args, Mapping):
            return str(args.get("text", ""))
    return None


def parse_answer(text: str | None) -> dict | None:
    try:
        value = json.loads(text or "")
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def answer_shape(parsed: Mapping | None) -> str:
    if not parsed:
        return "text"
    if "detections" in parsed:
        return "bbox"
    if "point" in parsed:
        return "keypoint"
    if "count" in parsed:
        return "count"
    if "attribute" in parsed:
        return "attribute"
    if "relation" in parsed:
        return "spatial"
    return "text"


def plan_items(text: str) -> list[str]:
    """The steps of a numbered plan text ("1. a\\n2. b" -> ["a", "b"])."""
    items = []
    for line in str(text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        head, dot, rest = line.partition(".")
        items.append(rest.strip() if dot and head.strip().isdigit() else line)
    return items


def collect(episode: Episode, rows: Iterable[Mapping[str, Any]], missing=()) -> EpisodeNotes:
    """Sort an episode's staged rows into spans, markers and VQA items."""
    ts = episode.timestamps
    t0 = float(ts[0]) if len(ts) else 0.0
    t_end = float(ts[-1]) if len(ts) else 0.0
    if len(ts) > 1:  # the last frame lasts one period too
        t_end += float(ts[-1] - ts[-2])
    notes = EpisodeNotes(episode.index, episode.task, t0, t_end, len(ts), missing=list(missing))
    starts: list[tuple[float, str]] = []
    questions: dict[tuple[float, str], str] = {}
    answers: dict[tuple[float, str], str] = {}
    for row in rows:
        style, role, t = row.get("style"), row.get("role"), float(row.get("timestamp") or 0.0)
        content = row.get("content")
        if style == "subtask":
            starts.append((t, one_line(content)))
        elif style == "plan":
            notes.markers.append(Marker(t, "plan", str(content or "")))
        elif style == "memory":
            notes.markers.append(Marker(t, "memory", one_line(content)))
        elif style == "task_aug":
            notes.task_aug.append(one_line(content))
        elif style == "interjection":
            notes.markers.append(Marker(t, "interjection", one_line(content)))
        elif style is None:
            text = say_text(row)
            if text is not None:
                notes.markers.append(Marker(t, "say", one_line(text)))
        elif style == "vqa":
            key = (t, str(row.get("camera")))
            (questions if role == "user" else answers)[key] = str(content or "")
    starts.sort()
    for k, (start, text) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else notes.t_end
        notes.subtasks.append(Span(start, max(end, start), text))
    order = list(KIND_NAMES)
    notes.markers.sort(key=lambda m: (m.t, order.index(m.kind)))
    for key in sorted(set(questions) | set(answers)):
        answer = answers.get(key, "")
        notes.vqa.append(
            VqaItem(key[0], key[1], questions.get(key, ""), answer, parse_answer(answer))
        )
    return notes


def load_notes(
    dataset: LeRobotDataset, staging_dir, index: int, modules: Sequence[str], review_dir=None
) -> tuple[Episode, EpisodeNotes]:
    """The episode (its frame timestamps) and what its staging files (and review) say."""
    episode = dataset.load_episode(index)
    rows_by_module: dict[str, list[dict]] = read_review(review_dir, index, modules)
    missing = []
    for module in modules:
        path = staging_file(staging_dir, index, module)
        if not path.is_file():
            missing.append(module)
            continue
        rows_by_module[module] = read_rows(path)
    rows = [row for _, row in merge_modules(rows_by_module)]  # as the dataset gets them
    notes = collect(episode, rows, missing)
    # Keystates stay in staging (merge_modules leaves them out): read from signals itself.
    for row in rows_by_module.get("signals", []):
        if row.get("style") == "keystate":
            kind, arm, part = parse_keystate(row["content"])
            lane = f"{arm} {part}".strip()
            notes.keystates.append(KeyMark(float(row["timestamp"]), kind, lane))
    return episode, notes

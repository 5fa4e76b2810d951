"""What the review server reads and writes: a run's rows per episode and a person's review.

Per reviewed episode, under ``results/<dataset>/review/``:

- ``episode_{N:06d}.jsonl``: the review module's staging file, the episode's rows of every
  style a person can correct (``modules/review``), as the person left them. Written when
  the person accepts or corrects the episode; ``staging.merge_modules`` lets it replace
  the model's rows of those styles.
- ``episode_{N:06d}.json``: the review state (``accepted``, ``corrected``, ``flagged``),
  the note and the episode's end time (what ``gold_segments`` needs without the dataset).
- ``gold.jsonl``: the reviewed episodes' subtasks as ``episcribe eval --gold`` reads them,
  rewritten on every save.

Every file is written atomically. The dataset and the staging files are only read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from episcribe.atomic import write_json, write_text
from episcribe.errors import UserError
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.lerobot.language import ROW_KEYS, float32_timestamp
from episcribe.modules import registry
from episcribe.pipeline.cache import incomplete_runs
from episcribe.pipeline.staging import (
    MODULES,
    dumps_row,
    merge_modules,
    read_review,
    read_rows,
    review_file,
    reviewed_episodes,
    staging_file,
    write_rows,
)
from episcribe.pipeline.validation import ERROR, validate_episode

REVIEW = registry.MODULES["review"]
STATES = ("not reviewed", "accepted", "corrected", "flagged")
GOLD_NAME = "gold.jsonl"


class ReviewError(UserError):
    """A correction the server refuses (the page shows the reason)."""


def state_file(review_dir: Path, episode: int) -> Path:
    return review_dir / f"episode_{int(episode):06d}.json"


def read_state(review_dir: Path, episode: int) -> dict[str, Any]:
    path = state_file(review_dir, episode)
    if not path.is_file():
        return {"state": "not reviewed", "note": ""}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}); delete it to reset") from None


def gold_segments(results_dir: str | Path) -> dict[int, list[dict[str, Any]]]:
    """Episode -> its subtasks as a person accepted or corrected them:
    ``[{"start_sec", "end_sec", "label"}]`` in time order, each ending where the next
    starts and the last at the episode's last frame. Flagged episodes are not gold."""
    review_dir = Path(results_dir) / "review"
    gold: dict[int, list[dict[str, Any]]] = {}
    for episode in reviewed_episodes(review_dir):
        state = read_state(review_dir, episode)
        if state["state"] not in ("accepted", "corrected"):
            continue
        starts = sorted(
            (float(r["timestamp"]), r["content"] or "")
            for r in read_rows(review_file(review_dir, episode))
            if r["style"] == "subtask"
        )
        ends = [t for t, _ in starts[1:]] + [float(state["end_sec"])]
        gold[episode] = [
            {"start_sec": t, "end_sec": end, "label": label}
            for (t, label), end in zip(starts, ends, strict=True)
        ]
    return gold


def gold_lines(results_dir: str | Path) -> str:
    """``gold_segments`` as the JSONL ``episcribe eval --gold`` reads, one episode a line."""
    return "".join(
        json.dumps({"episode": e, "segments": s}) + "\n"
        for e, s in sorted(gold_segments(results_dir).items())
    )


def dataset_root_of(results_dir: Path) -> Path:
    """The dataset a run annotated, as its validation report records it."""
    report = results_dir / "validation" / "report.json"
    try:
        root = json.loads(report.read_text(encoding="utf-8")).get("dataset_root")
    except FileNotFoundError:
        root = None
    if not root:
        raise UserError(
            f"{results_dir}: no finished run found ({report} is missing or older); run "
            "episcribe first, or name the dataset: episcribe review DATASET_DIR"
        )
    return Path(root)


class ReviewStore:
    def __init__(self, results_dir: str | Path, dataset_root: str | Path | None = None):
        self.results = Path(results_dir)
        self.staging = self.results / "staging"
        self.review_dir = self.results / "review"
        if not self.staging.is_dir():
            raise UserError(
                f"{self.results}: no staging files (no {self.staging}); run episcribe on the "
                "dataset first, from the directory that holds results/"
            )
        self.dataset = LeRobotDataset.open(dataset_root or dataset_root_of(self.results))
        self._counts: dict[Path, tuple[tuple, dict[str, int]]] = {}

    # -- reading -----------------------------------------------------------------------
    def episodes(self) -> list[int]:
        staged = {int(p.name[8:]) for p in self.staging.glob("episode_*") if p.is_dir()}
        return [e for e in self.dataset.episode_indices() if e in staged]

    def modules(self, episode: int) -> list[str]:
        return [m for m in MODULES if staging_file(self.staging, episode, m).is_file()]

    def model_rows(self, episode: int) -> dict[str, list[dict]]:
        return {m: read_rows(staging_file(self.staging, episode, m)) for m in self.modules(episode)}

    def merged(self, episode: int, model: dict[str, list[dict]]) -> list[tuple[str, Mapping]]:
        """The episode's rows as the dataset gets them (``model``: its ``model_rows``), the
        review applied."""
        return merge_modules({**model, **read_review(self.review_dir, episode, list(model))})

    @staticmethod
    def correctable_styles(model: Mapping[str, list[dict]]) -> set:
        """The styles a person may correct, of the modules with rows (``model_rows``)."""
        return {s for m in model for s in registry.MODULES[m].styles} & set(REVIEW.styles)

    def summaries(self) -> list[dict[str, Any]]:
        """One line per episode for the list page, hardest first: the episodes whose
        model calls failed (asked again), then those with most boundaries the plan moved
        onto keystates (snaps), then by index."""
        failed: dict[int, int] = {}
        for module in MODULES:
            for episode, runs in incomplete_runs(self.results / "cache", module).items():
                failed[episode] = failed.get(episode, 0) + runs
        reviewed = set(reviewed_episodes(self.review_dir))
        out = []
        for episode in self.episodes():
            info = self.dataset.episode_info(episode)
            rows = self._subtask_rows(episode, episode in reviewed)
            state = read_state(self.review_dir, episode)
            out.append(
                {
                    "episode": episode,
                    "task": info.tasks[0] if info.tasks else "",
                    "duration": round(max(info.length - 1, 0) / self.dataset.fps, 3),
                    "subtasks": rows["subtask"],
                    "snaps": rows["snap"],
                    "failed": failed.get(episode, 0),
                    "state": state["state"],
                    "note": state.get("note", ""),
                }
            )
        out.sort(key=lambda e: (-e["failed"], -e["snaps"], e["episode"]))
        return out

    def _subtask_rows(self, episode: int, reviewed: bool) -> dict[str, int]:
        counts = {"subtask": 0, "snap": 0}
        plan = staging_file(self.staging, episode, "plan")
        sources = [plan] if plan.is_file() else []
        if reviewed:
            sources.append(review_file(self.review_dir, episode))
        for path in sources:
            found = self._style_counts(path)
            counts["snap"] = max(counts["snap"], found["snap"])
            counts["subtask"] = found["subtask"]  # the review's count wins when there is one
        return counts

    def _style_counts(self, path: Path) -> dict[str, int]:
        """Subtask and snap rows of a file, parsed again only when the file changed (the
        list page is reloaded after every review; most files never change)."""
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)  # a rename gives a new inode
        cached = self._counts.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        found = {"subtask": 0, "snap": 0}
        for row in read_rows(path):
            if row["style"] in found:
                found[row["style"]] += 1
        self._counts[path] = (stamp, found)
        return found

    def episode_view(self, episode: int) -> dict[str, Any]:
        """What the episode page shows and edits."""
        if episode not in self.dataset.episode_indices():
            raise UserError(f"episode {episode} is not in the dataset {self.dataset.root}")
        ep = self.dataset.load_episode(episode)
        model = self.model_rows(episode)
        styles = self.correctable_styles(model)
        merged = self.merged(episode, model)
        keystates = [
            {"timestamp": r["timestamp"], "content": r["content"]}
            for r in model.get("signals", [])
            if r["style"] == "keystate"
        ]
        order = self.episodes()
        position = order.index(episode) if episode in order else -1
        return {
            "episode": episode,
            "task": ep.task,
            "fps": self.dataset.fps,
            "frames": [float(t) for t in ep.timestamps],
            "cameras": [
                {
                    "key": cam,
                    "from": seg.from_timestamp,
                    "to": seg.to_timestamp,
                    "width": seg.width,
                    "height": seg.height,
                }
                for cam, seg in ep.info.videos.items()
            ],
            "styles": sorted(("null" if s is None else s) for s in styles),
            "rows": [dict(r) for _, r in merged if r.get("style") in styles],
            "other": [dict(r) for _, r in merged if r.get("style") not in styles],
            "keystates": keystates,
            "review": read_state(self.review_dir, episode),
            "previous": order[position - 1] if position > 0 else None,
            "next": order[position + 1] if 0 <= position < len(order) - 1 else None,
        }

    def video_path(self, episode: int, camera: str) -> Path:
        videos = self.dataset.episode_info(episode).videos
        if camera not in videos:
            raise UserError(f"episode {episode} has no camera {camera!r}")
        return Path(videos[camera].path)

    # -- writing -----------------------------------------------------------------------
    def save(
        self, episode: int, rows: Iterable[Mapping] | None, state: str, note: str = ""
    ) -> dict[str, Any]:
        """Save a review: ``rows`` (the episode's correctable rows, all of them) unless None
        (a flag or an accept keeps what is shown). Refused with ``ReviewError`` when the
        rows break a rule the validator checks that the episode did not break before."""
        if state not in STATES[1:]:
            raise ReviewError(f"unknown review state {state!r}; expected one of {STATES[1:]}")
        ep = self.dataset.load_episode(episode)
        model = self.model_rows(episode)  # read once: every check below compares with it
        styles = self.correctable_styles(model)
        if rows is None and state == "accepted":
            rows = [r for _, r in self.merged(episode, model) if r.get("style") in styles]
        if rows is not None:
            rows = [_clean(r, styles) for r in rows]
            before = {(p.message, p.timestamp) for p in self._errors(ep, model, None)}
            new = [
                p for p in self._errors(ep, model, rows) if (p.message, p.timestamp) not in before
            ]
            if new:
                raise ReviewError(
                    "; ".join(
                        (f"t={p.timestamp:.3f}: " if p.timestamp is not None else "") + p.message
                        for p in new
                    )
                )
            write_rows(review_file(self.review_dir, episode), rows)
            if state in ("accepted", "corrected"):
                # Corrected when the rows differ from what the model wrote, whatever was asked.
                written = [r for _, r in merge_modules(model)]
                same = sorted(map(dumps_row, rows)) == sorted(
                    dumps_row(r) for r in written if r.get("style") in styles
                )
                state = "accepted" if same else "corrected"
        record = {
            "state": state,
            "note": note,
            "end_sec": float(ep.timestamps[-1]) if len(ep.timestamps) else 0.0,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(state_file(self.review_dir, episode), record)
        write_text(self.review_dir / GOLD_NAME, gold_lines(self.results))
        return record

    def _errors(self, ep, model: dict[str, list[dict]], review_rows: list[dict] | None) -> list:
        """The validator's errors for the episode's ``model`` rows with these review rows
        (None: the review on disk, if any)."""
        if review_rows is None:
            rows = {**model, **read_review(self.review_dir, ep.index, list(model))}
        else:
            rows = {**model, "review": review_rows}
        problems = validate_episode(ep, self.dataset.cameras, rows)
        return [p for p in problems if p.severity == ERROR]


def _clean(row: Any, styles: set) -> dict[str, Any]:
    """A row from the page: exactly the row keys, a style the review may write, and its
    timestamp as the float32 frame time widened (what staging files hold)."""
    if not isinstance(row, Mapping) or set(row) - set(ROW_KEYS) or set(ROW_KEYS) - set(row):
        raise ReviewError(f"a row needs exactly the keys {', '.join(ROW_KEYS)}: {row!r:.120}")
    if row["style"] not in styles:
        raise ReviewError(f"style {row['style']!r} cannot be corrected in this episode")
    try:
        timestamp = float32_timestamp(float(row["timestamp"]))
    except (TypeError, ValueError):
        raise ReviewError(f"timestamp must be a number: {row!r:.120}") from None
    return {key: row[key] for key in ROW_KEYS} | {"timestamp": timestamp}

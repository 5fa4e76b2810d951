"""What ``snakemake --report`` shows: per-episode timelines, VQA overlays, a run summary.

Everything is rendered with Pillow from the staging files (the rows as they will be
written) and real frames decoded by seeking, so what a researcher sees is what a policy
will be trained on:

* a **timeline** per episode: a strip of frames of the VLM camera with their timestamps,
  the subtask spans as labelled bars on a time axis, plan / memory / interjection /
  speech markers with short text, VQA ticks per camera, and the full texts listed below;
* **VQA overlays** per episode and camera: frames that received a question, with the
  boxes and points of the answer drawn in (coordinates are source-video pixels) and the
  question and answer beside them, at most ``MAX_VQA_PANELS`` per image;
* a **summary** (HTML, plus ``usage.csv``): the validation result, rows per style and the
  model usage per module and call kind (calls, retries, failures, tokens, latency
  percentiles) aggregated from the client's metrics files.

The workflow's ``render_report`` rule calls :func:`build_report` once for the whole dataset
(one Snakemake job, episodes rendered on a thread pool).
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .atomic import write_bytes, write_text
from .dataset import Episode, LeRobotDataset
from .errors import UserError
from .frames import burn_label, decode_frames
from .staging import read_rows, staging_file

log = logging.getLogger(__name__)

MAX_VQA_PANELS = 12  # overlay panels per (episode, camera) image
STRIP_FRAMES = 10  # frames in a timeline's strip
# Beyond this many episodes, timelines and overlays are drawn for an evenly spaced
# sample of them (a report with thousands of embedded images is too big to open).
MAX_EPISODES = 500
# Timelines are mostly text and flat colour: a 256-colour PNG keeps the text sharp at
# ~100 KB. Overlays are mostly photographs: JPEG is smaller there (see report.encode).
TIMELINE_EXT, OVERLAY_EXT = "png", "jpg"
JPEG_QUALITY = 80

WIDTH = 1600  # timeline width in pixels
LEFT = 118  # lane labels
RIGHT = 24
BG = (255, 255, 255)
INK = (33, 37, 41)
MUTED = (108, 117, 125)
GRID = (222, 226, 230)
# Distinct, print-safe colours (Okabe-Ito + Tableau); subtask bars and VQA detections.
PALETTE = [
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (86, 180, 233),
    (213, 94, 0),
    (240, 228, 66),
    (127, 127, 127),
    (148, 103, 189),
    (140, 86, 75),
]
KIND_COLOURS = {
    "task": (73, 80, 87),
    "subtask": (0, 114, 178),
    "plan": (0, 90, 181),
    "memory": (0, 140, 90),
    "interjection": (200, 30, 45),
    "say": (120, 60, 170),
    "vqa": (230, 120, 0),
}
KIND_NAMES = {
    "plan": "PLAN",
    "memory": "MEMORY",
    "interjection": "USER",
    "say": "ROBOT SAYS",
}


# -- fonts and text ------------------------------------------------------------------
@lru_cache(maxsize=32)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans when the system has it (wide Unicode coverage), else Pillow's own."""
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def text_width(text: str, fnt) -> float:
    return fnt.getlength(text)


def truncate(text: str, fnt, width: float) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels; "" if not even "…" fits."""
    text = " ".join(str(text).split())
    if text_width(text, fnt) <= width:
        return text
    if text_width("…", fnt) > width:
        return ""
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if text_width(text[:mid].rstrip() + "…", fnt) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…"


def wrap(text: str, fnt, width: float, max_lines: int | None = None) -> list[str]:
    """Greedy word wrap to ``width`` pixels; the last kept line ends with "…" if cut."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if text_width(candidate, fnt) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = word if text_width(word, fnt) <= width else truncate(word, fnt, width)
        lines.append(line)
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = truncate(lines[-1] + " …", fnt, width)
    return lines


def one_line(text: str | None) -> str:
    return " ".join(str(text or "").split())


# -- what an episode's rows say ------------------------------------------------------
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

    @property
    def duration(self) -> float:
        return max(self.t_end - self.t0, 1e-6)


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
    notes.markers.sort(key=lambda m: (m.t, list(KIND_NAMES).index(m.kind)))
    for key in sorted(set(questions) | set(answers)):
        answer = answers.get(key, "")
        notes.vqa.append(
            VqaItem(key[0], key[1], questions.get(key, ""), answer, parse_answer(answer))
        )
    return notes


def load_notes(dataset: LeRobotDataset, staging_dir, index: int, modules: Sequence[str]):
    episode = dataset.load_episode(index)
    rows: list[dict] = []
    missing = []
    for module in modules:
        path = staging_file(staging_dir, index, module)
        if not path.is_file():
            missing.append(module)
            continue
        rows += read_rows(path)
    return episode, collect(episode, rows, missing)


# -- drawing helpers -----------------------------------------------------------------
def readable_on(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = colour
    return INK if (0.299 * r + 0.587 * g + 0.114 * b) > 150 else (255, 255, 255)


def nice_step(duration: float, max_ticks: int = 16) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if duration / step <= max_ticks:
            return step
    return 3600 * math.ceil(duration / 3600 / max_ticks)


def fmt_t(t: float) -> str:
    if t >= 600:
        return f"{int(t // 60)}:{t % 60:04.1f}"
    return f"{t:.2f}".rstrip("0").rstrip(".") + " s" if t % 1 else f"{t:.0f} s"


def placeholder(size: tuple[int, int], text: str) -> Image.Image:
    image = Image.new("RGB", size, (206, 212, 218))
    draw = ImageDraw.Draw(image)
    fnt = font(max(9, size[1] // 9))
    lines = wrap(text, fnt, size[0] - 8, 3)
    for k, line in enumerate(lines):
        draw.text((4, 4 + k * fnt.size * 1.2), line, font=fnt, fill=INK)
    return image


def nearest_frames(timestamps: np.ndarray, wanted: Sequence[float]) -> list[float]:
    """The real frame timestamp closest to each wanted time."""
    ts = np.asarray(timestamps, dtype=np.float64)
    idx = np.clip(np.searchsorted(ts, wanted), 1, len(ts) - 1)
    left, right = ts[idx - 1], ts[idx]
    pick = np.where(
        np.abs(np.asarray(wanted) - left) <= np.abs(right - np.asarray(wanted)), left, right
    )
    return [float(t) for t in pick]


def strip_times(notes: EpisodeNotes, timestamps: np.ndarray, n: int) -> list[float]:
    """``n`` real frame times at the centres of ``n`` equal slices of the episode."""
    if len(timestamps) == 0:
        return []
    if len(timestamps) == 1:
        return [float(timestamps[0])]
    n = min(n, len(timestamps))
    wanted = [notes.t0 + (k + 0.5) / n * notes.duration for k in range(n)]
    return nearest_frames(timestamps, wanted)


# -- the timeline ----------------------------------------------------------------------
def render_timeline(
    notes: EpisodeNotes,
    frames: Sequence[tuple[float, Image.Image | None]],
    camera: str,
    *,
    cameras: Sequence[str] = (),
    width: int = WIDTH,
) -> Image.Image:
    """One episode's timeline (see the module docstring); ``frames`` = (time, image|None)."""
    plot_w = width - LEFT - RIGHT
    x_of = lambda t: LEFT + (t - notes.t0) / notes.duration * plot_w  # noqa: E731
    f_title, f_text, f_small = font(22, True), font(15), font(13)
    f_lane = font(13, True)

    # Height is known once the text blocks are laid out.
    header = [f"Task: {notes.task or '(none)'}"]
    if notes.task_aug:
        header.append(f"Rephrasings ({len(notes.task_aug)}): " + " | ".join(notes.task_aug[:4]))
    if notes.missing:
        header.append("No staging file for: " + ", ".join(notes.missing))
    header_lines = [line for text in header for line in wrap(text, f_text, plot_w + LEFT - 20, 2)]

    n = max(1, len(frames))
    tile_w = plot_w // n
    aspect = 0.75
    for _, image in frames:
        if image is not None:
            aspect = image.height / image.width
            break
    tile_h = round((tile_w - 4) * aspect)

    vqa_cams = [c for c in cameras if any(v.camera == c for v in notes.vqa)] or sorted(
        {v.camera for v in notes.vqa}
    )
    lanes = [("subtasks", 34), ("plan", 26), ("memory", 26), ("user", 26), ("robot says", 26)]
    lanes += [(f"vqa {short_camera(c)}", 18) for c in vqa_cams]
    details = detail_lines(notes, f_text, width - 60)

    top = 16
    y_header = top + 32
    y_strip = y_header + len(header_lines) * 20 + 10
    y_axis = y_strip + tile_h + 14
    y_lanes = y_axis + 26
    lanes_h = sum(h + 6 for _, h in lanes)
    y_details = y_lanes + lanes_h + 16
    height = y_details + len(details) * 21 + 16

    image = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(image)
    title = (
        f"Episode {notes.index}  ·  {notes.duration:.1f} s  ·  {notes.frames} frames  ·  "
        f"{plural(len(notes.subtasks), 'subtask')}  ·  "
        f"{plural(sum(m.kind == 'interjection' for m in notes.markers), 'interjection')}  ·  "
        f"{plural(len(notes.vqa), 'VQA pair')}  ·  frames: {camera}"
    )
    draw.text((20, top), truncate(title, f_title, width - 40), font=f_title, fill=INK)
    for k, line in enumerate(header_lines):
        draw.text((20, y_header + k * 20), line, font=f_text, fill=MUTED if k else INK)

    # Frame strip: tile k is centred on its frame's time.
    for k, (t, frame) in enumerate(frames):
        x = LEFT + k * tile_w + 2
        if frame is None:
            tile = placeholder((tile_w - 4, tile_h), "frame unavailable")
        else:
            tile = frame.convert("RGB").resize((tile_w - 4, tile_h), Image.Resampling.LANCZOS)
        tile = burn_label(tile, fmt_t(t - notes.t0))
        image.paste(tile, (x, y_strip))
        cx = x_of(t)
        draw.line((cx, y_strip + tile_h, cx, y_axis), fill=MUTED, width=1)

    # Time axis with gridlines through the lanes.
    draw.line((LEFT, y_axis, LEFT + plot_w, y_axis), fill=INK, width=2)
    step = nice_step(notes.duration)
    t = 0.0
    while t <= notes.duration + 1e-9:
        x = x_of(notes.t0 + t)
        draw.line((x, y_axis, x, y_axis + 5), fill=INK, width=1)
        draw.line((x, y_lanes, x, y_lanes + lanes_h - 6), fill=GRID, width=1)
        label = fmt_t(t)
        draw.text((x - text_width(label, f_small) / 2, y_axis + 6), label, font=f_small, fill=MUTED)
        t += step

    y = y_lanes
    lane_y: dict[str, tuple[int, int]] = {}
    for name, h in lanes:
        lane_y[name] = (y, h)
        draw.text((12, y + (h - 15) / 2), name, font=f_lane, fill=MUTED)
        draw.line((LEFT, y + h + 3, LEFT + plot_w, y + h + 3), fill=GRID, width=1)
        y += h + 6

    # Subtask bars: "n. text" inside when it fits, the number at least.
    ys, h = lane_y["subtasks"]
    for k, span in enumerate(notes.subtasks):
        x1, x2 = x_of(span.start), max(x_of(span.end), x_of(span.start) + 2)
        colour = PALETTE[k % len(PALETTE)]
        draw.rectangle((x1, ys, x2 - 1, ys + h), fill=colour)
        label = truncate(f"{k + 1}. {span.text}", f_text, x2 - x1 - 8) or truncate(
            str(k + 1), f_text, x2 - x1 - 2
        )
        draw.text((x1 + 4, ys + (h - 18) / 2), label, font=f_text, fill=readable_on(colour))

    # Markers with their short text, cut where the next marker of the lane starts.
    lane_of = {"plan": "plan", "memory": "memory", "interjection": "user", "say": "robot says"}
    by_lane: dict[str, list[Marker]] = defaultdict(list)
    for marker in notes.markers:
        by_lane[lane_of[marker.kind]].append(marker)
    for lane, markers in by_lane.items():
        ys, h = lane_y[lane]
        for k, marker in enumerate(markers):
            x = x_of(marker.t)
            colour = KIND_COLOURS[marker.kind]
            draw.polygon([(x - 6, ys + 2), (x + 6, ys + 2), (x, ys + 12)], fill=colour)
            draw.line((x, ys + 2, x, ys + h), fill=colour, width=2)
            limit = x_of(markers[k + 1].t) - 10 if k + 1 < len(markers) else LEFT + plot_w
            text = short_text(marker)
            label = truncate(text, f_small, limit - x - 8)
            draw.text((x + 6, ys + (h - 14) / 2 + 2), label, font=f_small, fill=colour)

    # VQA ticks, one row per camera.
    for cam in vqa_cams:
        ys, h = lane_y[f"vqa {short_camera(cam)}"]
        for item in notes.vqa:
            if item.camera == cam:
                x = x_of(item.t)
                draw.line((x, ys + 2, x, ys + h - 2), fill=KIND_COLOURS["vqa"], width=2)

    # Full texts, chronologically.
    y = y_details
    draw.line((20, y - 8, width - 20, y - 8), fill=GRID, width=1)
    for colour, tag, text in details:
        if tag:
            draw.text((20, y), tag, font=f_lane, fill=colour)
        draw.text((200, y), text, font=f_text, fill=INK if tag else MUTED)
        y += 21
    return image


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def short_camera(camera: str) -> str:
    return camera.rsplit(".", 1)[-1]


def short_text(marker: Marker) -> str:
    if marker.kind == "plan":
        items = plan_items(marker.text)
        if not items:
            return "(empty plan)"
        return f"{len(items)} step{'s' if len(items) > 1 else ''} left; next: {items[0]}"
    if marker.kind == "say":
        return f"“{marker.text}”"
    if marker.kind == "interjection":
        return f"“{marker.text}”"
    return marker.text


MAX_DETAIL_LINES = 48


def detail_lines(notes: EpisodeNotes, fnt, width: int) -> list[tuple[tuple, str, str]]:
    """(colour, tag, text) lines: the subtasks, then every marker in time order."""
    text_w = width - 200
    lines: list[tuple[tuple, str, str]] = []
    for k, span in enumerate(notes.subtasks):
        tag = f"{fmt_t(span.start - notes.t0).removesuffix(' s')}–{fmt_t(span.end - notes.t0)}"
        for j, line in enumerate(wrap(f"{k + 1}. {span.text}", fnt, text_w, 2)):
            lines.append((PALETTE[k % len(PALETTE)], "" if j else tag, line))
    for marker in notes.markers:
        tag = f"{fmt_t(marker.t - notes.t0)} {KIND_NAMES[marker.kind]}"
        text = marker.text
        if marker.kind == "plan":
            text = ";  ".join(f"{i + 1}. {s}" for i, s in enumerate(plan_items(marker.text)))
        for j, line in enumerate(wrap(text, fnt, text_w, 2)):
            lines.append((KIND_COLOURS[marker.kind], "" if j else tag, line))
    if len(lines) > MAX_DETAIL_LINES:
        hidden = len(lines) - MAX_DETAIL_LINES + 1
        lines = lines[: MAX_DETAIL_LINES - 1]
        lines.append((MUTED, "", f"… {hidden} more lines: see the staging files"))
    return lines


# -- VQA overlays ----------------------------------------------------------------------
def draw_answer(image: Image.Image, parsed: Mapping | None, scale: float = 1.0) -> Image.Image:
    """A copy of ``image`` with the answer's boxes / point drawn (coords x ``scale``)."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    lw = max(2, round(min(out.size) / 90))
    fnt = font(max(11, min(out.size) // 22), True)
    shape = answer_shape(parsed)
    if shape == "bbox":
        for k, det in enumerate(parsed.get("detections") or []):
            box = det.get("bbox") if isinstance(det, Mapping) else None
            if not (isinstance(box, list) and len(box) == 4):
                continue
            x1, y1, x2, y2 = (float(v) * scale for v in box)
            colour = PALETTE[k % len(PALETTE)]
            draw.rectangle((x1, y1, x2, y2), outline=colour, width=lw)
            label = str(det.get("label", ""))
            if label:
                tw = text_width(label, fnt)
                ty = y1 - fnt.size - 4 if y1 - fnt.size - 4 >= 0 else y1 + lw
                draw.rectangle((x1, ty, x1 + tw + 6, ty + fnt.size + 4), fill=colour)
                draw.text((x1 + 3, ty + 1), label, font=fnt, fill=readable_on(colour))
    elif shape == "keypoint":
        point = parsed.get("point")
        if isinstance(point, list) and len(point) == 2:
            x, y = (float(v) * scale for v in point)
            colour = PALETTE[0]
            r = max(6, lw * 4)
            draw.ellipse((x - r, y - r, x + r, y + r), outline=(255, 255, 255), width=lw + 2)
            draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=lw)
            draw.line((x - 2 * r, y, x - r, y), fill=colour, width=lw)
            draw.line((x + r, y, x + 2 * r, y), fill=colour, width=lw)
            draw.line((x, y - 2 * r, x, y - r), fill=colour, width=lw)
            draw.line((x, y + r, x, y + 2 * r), fill=colour, width=lw)
            label = str(parsed.get("label", ""))
            if label:
                draw.text(
                    (x + r + 4, y + r),
                    label,
                    font=fnt,
                    fill=colour,
                    stroke_width=2,
                    stroke_fill=(255, 255, 255),
                )
    return out


def answer_lines(item: VqaItem) -> list[tuple[tuple, str]]:
    """The answer as (colour, text) lines; detection colours match the drawn boxes."""
    p, shape = item.parsed, item.shape
    if shape == "bbox":
        out = []
        for k, det in enumerate(p.get("detections") or []):
            box = ", ".join(f"{v:g}" for v in det.get("bbox", []))
            out.append((PALETTE[k % len(PALETTE)], f"■ {det.get('label', '?')}  [{box}]"))
        return out or [(MUTED, "no detections")]
    if shape == "keypoint":
        x, y = (p.get("point") or [0, 0])[:2]
        return [(PALETTE[0], f"● {p.get('label', '?')} at ({x:g}, {y:g})")]
    if shape == "count":
        return [(INK, f"{p.get('label', '?')}: {p.get('count')}")]
    if shape == "attribute":
        return [(INK, f"{p.get('label', '?')} — {p.get('attribute')}: {p.get('value')}")]
    if shape == "spatial":
        return [(INK, f"{p.get('subject')} {p.get('relation')} {p.get('object')}")]
    return [(MUTED, item.answer or "(no answer)")]


def pick_vqa(items: Sequence[VqaItem], cap: int = MAX_VQA_PANELS) -> list[VqaItem]:
    """At most ``cap`` items, grounded answers (boxes, points) first, spread over time."""
    if len(items) <= cap:
        return list(items)

    def spread(pool: list[VqaItem], k: int) -> list[VqaItem]:
        if k >= len(pool):
            return pool
        return [pool[round(i * (len(pool) - 1) / max(k - 1, 1))] for i in range(k)]

    grounded = [v for v in items if v.shape in ("bbox", "keypoint")]
    other = [v for v in items if v.shape not in ("bbox", "keypoint")]
    chosen = spread(grounded, max(cap * 2 // 3, cap - len(other)))
    chosen += spread(other, cap - len(chosen))
    return sorted(chosen, key=lambda v: v.t)


def render_vqa_sheet(
    notes: EpisodeNotes,
    camera: str,
    panels: Sequence[tuple[VqaItem, Image.Image | None]],
    total: int,
    *,
    image_w: int = 360,
    text_w: int = 330,
    columns: int = 2,
) -> Image.Image:
    """A grid of panels: the frame with the answer drawn, the question and answer beside."""
    f_title, f_head, f_text = font(22, True), font(16, True), font(16)
    cells = []
    for item, frame in panels:
        if frame is None:
            shown = placeholder((image_w, round(image_w * 0.75)), "frame unavailable")
        else:
            scale = image_w / frame.width
            size = (image_w, round(frame.height * scale))
            shown = draw_answer(frame.resize(size, Image.Resampling.LANCZOS), item.parsed, scale)
        lines: list[tuple[tuple, str, Any]] = [
            (INK, f"t = {fmt_t(item.t - notes.t0)}  ·  {item.shape}", f_head)
        ]
        lines += [(MUTED, s, f_text) for s in wrap("Q: " + item.question, f_text, text_w, 4)]
        for colour, text in answer_lines(item):
            lines += [(colour, s, f_text) for s in wrap(text, f_text, text_w, 3)]
        cells.append((shown, lines))
    pad = 14
    cell_w = image_w + pad + text_w
    cell_h = max(
        [max(shown.height, 24 * len(lines)) for shown, lines in cells] or [round(image_w * 0.75)]
    )
    rows = max(1, math.ceil(len(cells) / columns))
    width = columns * cell_w + (columns + 1) * pad
    height = 60 + rows * (cell_h + pad) + pad
    sheet = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(sheet)
    title = f"Episode {notes.index}  ·  VQA on {camera}  ·  {len(panels)} of {total} frames shown"
    draw.text((pad, 16), truncate(title, f_title, width - 2 * pad), font=f_title, fill=INK)
    for k, (shown, lines) in enumerate(cells):
        x = pad + (k % columns) * (cell_w + pad)
        y = 60 + (k // columns) * (cell_h + pad)
        sheet.paste(shown, (x, y))
        ty = y
        for colour, text, fnt in lines:
            draw.text((x + image_w + pad, ty), text, font=fnt, fill=colour)
            ty += 24
    return sheet


# -- model usage ---------------------------------------------------------------------
USAGE_COLUMNS = (
    "module",
    "kind",
    "calls",
    "ok",
    "failed",
    "invalid",
    "retries",
    "reprompted",
    "prompt_tokens",
    "completion_tokens",
    "latency_p50_s",
    "latency_p90_s",
    "latency_p99_s",
    "latency_max_s",
)


def read_metrics(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Every call record of these metrics files, with ``module`` taken from the rule dir.

    ``logs/{dataset}/annotate_{module}/{shard}.metrics.jsonl``; missing files (jobs that
    made no call: everything came from the cache) and unreadable lines are skipped.
    """
    records = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            continue
        module = path.parent.name.removeprefix("annotate_")
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append({**record, "module": module})
    return records


def metrics_files(
    logs_dir: str | os.PathLike, modules: Iterable[str], episodes: Iterable[int]
) -> list[Path]:
    """The metrics files of the annotate jobs of these modules and episodes.

    ``{logs_dir}/annotate_{module}/{shard}.metrics.jsonl`` where shard is
    ``episode_000012`` or ``episodes_000000-000019``; files of shards whose first or last
    episode is not in ``episodes`` (left from an earlier run over others) are skipped.
    """
    wanted = set(int(e) for e in episodes)
    found = []
    for module in modules:
        for path in sorted(Path(logs_dir, f"annotate_{module}").glob("*.metrics.jsonl")):
            label = path.name.removesuffix(".metrics.jsonl")
            bounds = label.split("_", 1)[-1].split("-")
            try:
                first, last = int(bounds[0]), int(bounds[-1])
            except ValueError:
                continue
            if first in wanted and last in wanted:
                found.append(path)
    return found


def _usage_row(module: str, kind: str, records: list[dict]) -> dict:
    latencies = np.array([float(r.get("latency_s") or 0.0) for r in records])
    outcomes = Counter(r.get("outcome") for r in records)
    pct = np.percentile(latencies, [50, 90, 99]).tolist() if len(latencies) else [0.0, 0.0, 0.0]
    return {
        "module": module,
        "kind": kind,
        "calls": len(records),
        "ok": outcomes.get("ok", 0),
        "failed": len(records) - outcomes.get("ok", 0),
        "invalid": outcomes.get("invalid", 0),
        "retries": sum(int(r.get("retries") or 0) for r in records),
        "reprompted": sum(bool(r.get("reprompted")) for r in records),
        "prompt_tokens": sum(int(r.get("prompt_tokens") or 0) for r in records),
        "completion_tokens": sum(int(r.get("completion_tokens") or 0) for r in records),
        "latency_p50_s": round(pct[0], 3),
        "latency_p90_s": round(pct[1], 3),
        "latency_p99_s": round(pct[2], 3),
        "latency_max_s": round(float(latencies.max()), 3) if len(latencies) else 0.0,
    }


def usage(records: Sequence[dict], modules: Sequence[str] = ()) -> list[dict]:
    """One row per module (kind "all"), each followed by its rows per call kind.

    Every module in ``modules`` gets a row, with zero calls when it made none.
    """
    by_module: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_module[record["module"]].append(record)
    order = list(modules) + sorted(m for m in by_module if m not in modules)
    rows = []
    for module in order:
        recs = by_module.get(module, [])
        rows.append(_usage_row(module, "all", recs))
        by_kind: dict[str, list[dict]] = defaultdict(list)
        for r in recs:
            by_kind[str(r.get("kind"))].append(r)
        rows += [_usage_row(module, kind, by_kind[kind]) for kind in sorted(by_kind)]
    if len(order) > 1:
        rows.append(_usage_row("total", "all", list(records)))
    return rows


def usage_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=USAGE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# -- the summary page ----------------------------------------------------------------
CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#212529;
margin:24px;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px}
.muted{color:#6c757d}.ok{color:#198754;font-weight:600}.bad{color:#c81e2d;font-weight:600}
.warn{color:#b7791f;font-weight:600}
table{border-collapse:collapse;margin:4px 0}th,td{padding:4px 10px;border-bottom:1px solid #dee2e6}
th{background:#f1f3f5;text-align:left;font-weight:600}td.n{text-align:right;
font-variant-numeric:tabular-nums}tr.module td{font-weight:600;background:#fafbfc}
tr.kind td:first-child{padding-left:26px;color:#6c757d}code{font-size:12px}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="n">{value:.3f}</td>'
    if isinstance(value, int):
        return f'<td class="n">{value:,}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def summary_html(
    *,
    dataset: str,
    episodes: Sequence[int],
    shown: Sequence[int],
    modules: Sequence[str],
    model: Mapping[str, Any],
    validation: Mapping[str, Any] | None,
    usage_rows: Sequence[dict],
    seconds: float | None = None,
) -> str:
    """A self-contained HTML page (inline CSS, no scripts) for the report's Summary."""
    e = html.escape
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>episcribe run summary</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>episcribe · {e(dataset)}</h1>",
        f"<div class='muted'>{len(episodes)} episodes · modules: {e(', '.join(modules))} · "
        f"model: <code>{e(str(model.get('model_id', '?')))}</code> · "
        f"frames camera: <code>{e(str(model.get('camera_key', '?')))}</code></div>",
    ]
    if len(shown) < len(episodes):
        out.append(
            f"<p class='warn'>Timelines and overlays are drawn for {len(shown)} evenly spaced "
            f"episodes of {len(episodes)} (at most {MAX_EPISODES}).</p>"
        )
    out.append("<h2>Validation</h2>")
    if validation is None:
        out.append("<p class='muted'>No validation report.</p>")
    else:
        status = "ok" if validation.get("ok") else "bad"
        out.append(
            f"<p><span class='{status}'>{'PASSED' if validation.get('ok') else 'FAILED'}</span>"
            f" — {validation.get('episodes_checked', 0)} episodes checked, "
            f"{validation.get('errors', 0)} errors, {validation.get('warnings', 0)} warnings</p>"
        )
        problems = validation.get("problems") or []
        if problems:
            out.append(
                "<table><tr><th>severity</th><th>episode</th><th>module</th>"
                "<th>t (s)</th><th>problem</th></tr>"
            )
            for p in problems[:50]:
                t = p.get("timestamp")
                out.append(
                    "<tr>"
                    + _cell(str(p.get("severity")))
                    + _cell(str(p.get("episode")))
                    + _cell(str(p.get("module") or ""))
                    + _cell("" if t is None else f"{t:.3f}")
                    + _cell(str(p.get("message")))
                    + "</tr>"
                )
            out.append("</table>")
            if len(problems) > 50:
                out.append(
                    f"<p class='muted'>… and {len(problems) - 50} more in the "
                    "validation report.</p>"
                )
        counts = validation.get("rows_per_style") or {}
        out.append(
            "<h2>Rows per style</h2><table><tr><th>style</th><th>rows</th><th>per episode</th></tr>"
        )
        n_ep = max(1, int(validation.get("episodes_checked") or 1))
        for style, count in sorted(counts.items()):
            name = "speech (say tool call)" if style == "null" else style
            out.append(f"<tr>{_cell(name)}{_cell(int(count))}{_cell(count / n_ep)}</tr>")
        out.append(
            f"<tr class='module'>{_cell('all')}{_cell(sum(counts.values()))}"
            f"{_cell(sum(counts.values()) / n_ep)}</tr></table>"
        )

    out.append("<h2>Model usage</h2>")
    out.append(
        "<p class='muted'>Calls made by the annotation jobs that last ran (episodes restored "
        "from the cache made none). Failed = no usable answer after retries and one "
        "re-prompt; latency is per call, retries included.</p>"
    )
    heads = [
        "module / call kind",
        "calls",
        "ok",
        "failed",
        "invalid",
        "retries",
        "re-prompted",
        "prompt tokens",
        "completion tokens",
        "p50 s",
        "p90 s",
        "p99 s",
        "max s",
    ]
    out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")
    for row in usage_rows:
        is_module = row["kind"] == "all"
        name = row["module"] if is_module else row["kind"]
        cls = "module" if is_module else "kind"
        failed = row["failed"]
        cells = [_cell(name)] + [_cell(row[k]) for k in USAGE_COLUMNS[2:]]
        if not row["calls"]:
            cells[-4:] = ['<td class="n muted">–</td>'] * 4
        if failed:
            cells[3] = f'<td class="n bad">{failed:,}</td>'
        out.append(f"<tr class='{cls}'>" + "".join(cells) + "</tr>")
    out.append("</table>")
    if seconds is not None:
        out.append(f"<p class='muted'>Rendered in {seconds:.1f} s.</p>")
    out.append("</body></html>\n")
    return "\n".join(out)


# -- the whole report ----------------------------------------------------------------
def sample_episodes(episodes: Sequence[int], cap: int = MAX_EPISODES) -> list[int]:
    episodes = list(episodes)
    if len(episodes) <= cap:
        return episodes
    return sorted({episodes[round(i * (len(episodes) - 1) / (cap - 1))] for i in range(cap)})


def encode(image: Image.Image, ext: str) -> bytes:
    buf = io.BytesIO()
    if ext == "png":
        quantized = image.quantize(256, method=Image.Quantize.FASTOCTREE)
        quantized.save(buf, format="PNG", optimize=True)
    else:
        image.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def timeline_name(index: int) -> str:
    return f"episode_{index:06d}.{TIMELINE_EXT}"


def overlay_name(index: int, camera: str) -> str:
    return f"episode_{index:06d}__{camera}.{OVERLAY_EXT}"


def _decode(dataset, index: int, camera: str, times: Sequence[float]) -> list[Image.Image | None]:
    if not times:
        return []
    try:
        return list(decode_frames(dataset.episode_info(index).videos[camera], times))
    except (UserError, KeyError) as exc:
        log.warning("episode %06d, camera %s: frames unavailable: %s", index, camera, exc)
        return [None] * len(times)


def render_episode(
    dataset: LeRobotDataset,
    staging_dir,
    index: int,
    modules: Sequence[str],
    camera: str,
    timelines_dir: Path,
    overlays_dir: Path,
) -> dict:
    """Write one episode's timeline and overlays; returns what was written."""
    episode, notes = load_notes(dataset, staging_dir, index, modules)
    times = strip_times(notes, episode.timestamps, STRIP_FRAMES)
    frames = list(zip(times, _decode(dataset, index, camera, times), strict=True))
    timeline = render_timeline(notes, frames, camera, cameras=dataset.cameras)
    write_bytes(timelines_dir / timeline_name(index), encode(timeline, TIMELINE_EXT))
    overlays = []
    for cam in dataset.cameras:
        items = [v for v in notes.vqa if v.camera == cam]
        if not items:
            continue
        chosen = pick_vqa(items)
        images = _decode(dataset, index, cam, [v.t for v in chosen])
        sheet = render_vqa_sheet(notes, cam, list(zip(chosen, images, strict=True)), len(items))
        write_bytes(overlays_dir / overlay_name(index, cam), encode(sheet, OVERLAY_EXT))
        overlays.append(cam)
    return {"episode": index, "overlays": overlays}


def build_report(
    *,
    dataset_root: str | os.PathLike,
    staging_dir: str | os.PathLike,
    episodes: Sequence[int],
    modules: Sequence[str],
    model: Mapping[str, Any],
    metrics_paths: Iterable[str | os.PathLike],
    validation_json: str | os.PathLike | None,
    timelines_dir: str | os.PathLike,
    overlays_dir: str | os.PathLike,
    summary_path: str | os.PathLike,
    usage_path: str | os.PathLike,
    dataset_name: str | None = None,
    threads: int = 1,
) -> dict:
    """Render every part of the report; returns counts (also logged)."""
    started = time.monotonic()
    dataset = LeRobotDataset.open(dataset_root)
    camera = model.get("camera_key") or dataset.cameras[0]
    timelines_dir, overlays_dir = Path(timelines_dir), Path(overlays_dir)
    timelines_dir.mkdir(parents=True, exist_ok=True)
    overlays_dir.mkdir(parents=True, exist_ok=True)
    shown = sample_episodes(episodes)

    def one(index: int) -> dict:
        return render_episode(
            dataset, staging_dir, index, modules, camera, timelines_dir, overlays_dir
        )

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        done = list(pool.map(one, shown))

    validation = None
    if validation_json and Path(validation_json).is_file():
        validation = json.loads(Path(validation_json).read_text(encoding="utf-8"))
    rows = usage(read_metrics(metrics_paths), modules)
    write_text(usage_path, usage_csv(rows))
    seconds = time.monotonic() - started
    write_text(
        summary_path,
        summary_html(
            dataset=dataset_name or dataset.name,
            episodes=episodes,
            shown=shown,
            modules=modules,
            model={**model, "camera_key": camera},
            validation=validation,
            usage_rows=rows,
            seconds=seconds,
        ),
    )
    result = {
        "timelines": len(done),
        "overlays": sum(len(d["overlays"]) for d in done),
        "calls": sum(r["calls"] for r in rows if r["kind"] == "all" and r["module"] != "total"),
        "seconds": round(seconds, 2),
    }
    log.info(
        "report: %d timelines, %d overlay sheets, %d model calls summarised, %.1f s",
        result["timelines"],
        result["overlays"],
        result["calls"],
        seconds,
    )
    return result

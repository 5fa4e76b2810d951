"""The timeline of one episode: a frame strip over the time axis, lanes, the full texts.

A strip of frames of the VLM camera with their timestamps, the subtask spans as labelled
bars on a time axis, plan / memory / interjection / speech markers with short text, VQA
ticks per camera, a lane per gripper/hand (and resting arm) with the signals module's
keystates, each drawn up through the subtask bars so one sees whether the boundaries sit
on them, and the full texts listed below, all from the staged rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from episcribe.report.draw import (
    BG,
    GRID,
    INK,
    KIND_COLOURS,
    MUTED,
    PALETTE,
    fit,
    fmt_t,
    font,
    nice_step,
    placeholder,
    plural,
    readable_on,
    short_camera,
    stamp,
    text_width,
    truncate,
    wrap,
)
from episcribe.report.notes import KIND_NAMES, EpisodeNotes, Marker, plan_items

STRIP_FRAMES = 10  # frames in a timeline's strip
WIDTH = 1600  # timeline width in pixels
LEFT = 118  # lane labels
RIGHT = 24


def nearest_frames(timestamps: np.ndarray, wanted: Sequence[float]) -> list[float]:
    """The real frame timestamp closest to each wanted time."""
    ts = np.asarray(timestamps, dtype=np.float64)
    if len(ts) == 1:
        return [float(ts[0])] * len(wanted)
    idx = np.clip(np.searchsorted(ts, wanted), 1, len(ts) - 1)
    left, right = ts[idx - 1], ts[idx]
    pick = np.where(
        np.abs(np.asarray(wanted) - left) <= np.abs(right - np.asarray(wanted)), left, right
    )
    return [float(t) for t in pick]


def strip_slices(notes: EpisodeNotes, n: int = STRIP_FRAMES) -> list[tuple[float, float]]:
    """``n`` equal slices (start, end) of the episode, in episode time."""
    n = max(1, min(n, notes.frames))
    step = notes.duration / n
    return [(notes.t0 + k * step, notes.t0 + (k + 1) * step) for k in range(n)]


def strip_times(notes: EpisodeNotes, timestamps: np.ndarray, n: int = STRIP_FRAMES) -> list[float]:
    """``n`` real frame times at the centres of ``n`` equal slices of the episode."""
    if len(timestamps) == 0:
        return []
    if len(timestamps) == 1:
        return [float(timestamps[0])]
    slices = strip_slices(notes, n)
    return nearest_frames(timestamps, [(a + b) / 2 for a, b in slices])


# -- the timeline ----------------------------------------------------------------------
def tile_size(n: int, aspect: float, width: int = WIDTH) -> tuple[int, int]:
    """The size of each of ``n`` strip frames (``aspect`` = height / width)."""
    tile_w = (width - LEFT - RIGHT) // max(1, n) - 4  # 4 px between tiles
    return tile_w, round(tile_w * aspect)


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

    aspect = next((im.height / im.width for _, im in frames if im is not None), 0.75)
    tile_w, tile_h = tile_size(len(frames), aspect, width)
    f_tile = font(max(10, min(tile_h // 8, 16)), True)

    vqa_cams = [c for c in cameras if any(v.camera == c for v in notes.vqa)] or sorted(
        {v.camera for v in notes.vqa}
    )
    lanes = [("subtasks", 34), ("plan", 26), ("memory", 26), ("user", 26), ("robot says", 26)]
    lanes += [(f"vqa {short_camera(c)}", 18) for c in vqa_cams]
    lanes += [(lane, 22) for lane in notes.keystate_lanes]
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

    # Frame strip: tile k over slice k, a line down to its frame's time on the axis.
    for k, (t, frame) in enumerate(frames):
        x = LEFT + k * (tile_w + 4) + 2
        if frame is None:
            tile = placeholder((tile_w, tile_h), "frame unavailable")
        else:
            tile = fit(frame, (tile_w, tile_h))
        image.paste(tile, (x, y_strip))
        # Its time in the top-left corner, white on black.
        label = fmt_t(t - notes.t0)
        lw = text_width(label, f_tile)
        draw.rectangle((x, y_strip, x + lw + 5, y_strip + f_tile.size + 5), fill=(0, 0, 0))
        stamp(image, (x + 3, y_strip + 2), label, f_tile, (255, 255, 255))
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
        stamp(image, (x - text_width(label, f_small) / 2, y_axis + 6), label, f_small, MUTED)
        t += step

    y = y_lanes
    lane_y: dict[str, tuple[int, int]] = {}
    for name, h in lanes:
        lane_y[name] = (y, h)
        stamp(image, (12, y + (h - 15) / 2), name, f_lane, MUTED)
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

    # Keystates: a tick in their lane, a thin line up through the subtask bars.
    top_of_subtasks = lane_y["subtasks"][0]
    for mark in notes.keystates:
        ys, h = lane_y[mark.lane]
        x = x_of(mark.t)
        colour = KIND_COLOURS[mark.kind]
        draw.line((x, top_of_subtasks, x, ys + h), fill=colour, width=1)
        draw.polygon(
            [(x, ys + 2), (x + 6, ys + h / 2), (x, ys + h - 2), (x - 6, ys + h / 2)], fill=colour
        )
        stamp(image, (x + 8, ys + (h - 14) / 2), mark.kind, f_small, colour)

    # Full texts, chronologically.
    y = y_details
    draw.line((20, y - 8, width - 20, y - 8), fill=GRID, width=1)
    for colour, tag, text in details:
        if tag:
            draw.text((20, y), tag, font=f_lane, fill=colour)
        draw.text((200, y), text, font=f_text, fill=INK if tag else MUTED)
        y += 21
    return image


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

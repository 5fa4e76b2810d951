"""VQA overlays: frames that received a question, the answer's boxes and points drawn in.

One sheet per (episode, camera): at most ``MAX_VQA_PANELS`` panels, each the frame with the
answer drawn (coordinates are the source video's pixels) and the question and answer
beside it; box colours match the listed detections.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from PIL import Image, ImageDraw

from episcribe.report.draw import (
    BG,
    INK,
    MUTED,
    PALETTE,
    fit,
    fmt_t,
    font,
    placeholder,
    readable_on,
    text_width,
    truncate,
    wrap,
)
from episcribe.report.notes import EpisodeNotes, VqaItem, answer_shape

MAX_VQA_PANELS = 6  # panels per (episode, camera) sheet: 3 rows of 2
PROBE = 24  # candidates looked at (keyframe or not) when picking a sheet's panels
PANEL_W = 360  # width of a panel's frame


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


def _spread(pool: list[VqaItem], k: int) -> list[VqaItem]:
    """``k`` items of ``pool`` (in time order) evenly spaced over it."""
    if k <= 0:
        return []
    if k >= len(pool):
        return list(pool)
    return [pool[round(i * (len(pool) - 1) / max(k - 1, 1))] for i in range(k)]


def pick_vqa(
    items: Sequence[VqaItem],
    cap: int = MAX_VQA_PANELS,
    cheap: Callable[[VqaItem], bool] | None = None,
) -> list[VqaItem]:
    """At most ``cap`` items, grounded answers (boxes, points) first, spread over time.

    With ``cheap`` (is this item's frame a keyframe, one decode instead of up to a GOP),
    each group takes its spread from the cheap items of ``PROBE`` evenly spaced candidates
    when there are enough of them, topping up with the others.
    """
    if len(items) <= cap:
        return list(items)
    grounded = [v for v in items if v.grounded]
    other = [v for v in items if not v.grounded]
    n_grounded = min(len(grounded), max(cap * 2 // 3, cap - len(other)))

    def choose(pool: list[VqaItem], k: int) -> list[VqaItem]:
        if cheap is None or k >= len(pool):
            return _spread(pool, k)
        candidates = _spread(pool, max(k, PROBE * k // cap))
        fast = [v for v in candidates if cheap(v)]
        chosen = _spread(fast, k)
        if len(chosen) < k:
            rest = [v for v in candidates if not any(v is c for c in chosen)]
            chosen += _spread(rest, k - len(chosen))
        return chosen

    chosen = choose(grounded, n_grounded)
    chosen += choose(other, cap - len(chosen))
    return sorted(chosen, key=lambda v: v.t)


def render_vqa_sheet(
    notes: EpisodeNotes,
    camera: str,
    panels: Sequence[tuple[VqaItem, Image.Image | None]],
    total: int,
    *,
    image_w: int = PANEL_W,
    text_w: int = 330,
    columns: int = 2,
    source_width: int | None = None,
) -> Image.Image:
    """A grid of panels: the frame with the answer drawn, the question and answer beside.

    Answer coordinates are pixels of the source video, ``source_width`` wide (default:
    each frame's own width; give it when the frames come scaled already).
    """
    f_title, f_head, f_text = font(22, True), font(16, True), font(16)
    cells = []
    for item, frame in panels:
        if frame is None:
            shown = placeholder((image_w, round(image_w * 0.75)), "frame unavailable")
        else:
            scale = image_w / (source_width or frame.width)
            size = (image_w, round(frame.height * image_w / frame.width))
            shown = draw_answer(fit(frame, size), item.parsed, scale)
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

"""The evaluation page: per episode, gold and predicted subtasks on one time axis.

``episcribe eval --plots DIR`` writes one PNG per gold episode (``episode_{N:06d}.png``)
and ``index.html`` showing them worst first (by the first prediction's segmentation F1,
then by episode). Lanes: gold, then each prediction (and its other views). A matched pair
has the same colour in both lanes; a bar that matched nothing is grey. Drawn with the
report's own primitives (``report.draw``: palette, fonts, axis steps, PNG palette).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from episcribe.atomic import write_bytes, write_text
from episcribe.eval.metrics import EpisodeScore, Segment, prf, snap_outer_edges
from episcribe.report.draw import (
    BG,
    GRID,
    INK,
    MUTED,
    PALETTE,
    PLACEHOLDER,
    fmt_t,
    font,
    nice_step,
    png_bytes,
    readable_on,
    stamp,
    text_width,
    truncate,
)

WIDTH = 1400
LEFT, RIGHT = 250, 20
LANE_H = 30


def render_episode(
    title: str,
    gold: Sequence[Segment],
    lanes: Sequence[tuple[str, Sequence[Segment], EpisodeScore]],
) -> Image.Image:
    """One episode: a gold lane and one lane per (name, predicted segments, its score)."""
    gold = sorted(gold, key=lambda s: (s.start, s.end))
    t0 = min((s.start for s in gold), default=0.0)
    t1 = max((s.end for s in gold), default=1.0)
    span = max(t1 - t0, 1e-3)
    plot_w = WIDTH - LEFT - RIGHT

    def x_of(t: float) -> float:
        return LEFT + (min(max(t, t0), t1) - t0) / span * plot_w

    f_title, f_text, f_lane, f_small = font(20, True), font(14), font(13, True), font(12)
    y_axis = 50
    height = y_axis + 30 + (len(lanes) + 1) * (LANE_H + 8) + 10
    image = Image.new("RGB", (WIDTH, height), BG)
    draw = ImageDraw.Draw(image)
    draw.text((20, 14), truncate(title, f_title, WIDTH - 40), font=f_title, fill=INK)
    draw.line((LEFT, y_axis, LEFT + plot_w, y_axis), fill=INK, width=2)
    step, t = nice_step(span), 0.0
    while t <= span + 1e-9:
        x = x_of(t0 + t)
        draw.line((x, y_axis, x, height - 10), fill=GRID, width=1)
        stamp(image, (x - text_width(fmt_t(t), f_small) / 2, y_axis + 4), fmt_t(t), f_small, MUTED)
        t += step

    def lane(y: int, name: str, segments: Sequence[Segment], colours: dict[int, tuple]) -> None:
        stamp(image, (12, y + 8), truncate(name, f_lane, LEFT - 20), f_lane, MUTED)
        for k, seg in enumerate(segments):
            x1, x2 = x_of(seg.start), max(x_of(seg.end), x_of(seg.start) + 2)
            colour = colours.get(k, PLACEHOLDER)
            draw.rectangle((x1, y, x2 - 1, y + LANE_H), fill=colour, outline=BG)
            label = truncate(seg.label, f_text, x2 - x1 - 8)
            draw.text((x1 + 4, y + 7), label, font=f_text, fill=readable_on(colour))

    y = y_axis + 26
    lane(y, "gold", gold, {k: PALETTE[k % len(PALETTE)] for k in range(len(gold))})
    for name, pred, score in lanes:
        y += LANE_H + 8
        snapped = snap_outer_edges(pred, gold)
        colours = {p: PALETTE[g % len(PALETTE)] for p, g, _ in score.pairs}
        lane(y, name, snapped, colours)
    return image


def write_page(
    out: Path,
    gold: dict[int, list[Segment]],
    families: dict[int, str],
    predictions: Sequence[tuple[str, dict[str, dict[int, list[Segment]]], dict[str, list]]],
) -> Path:
    """PNGs and ``index.html`` in ``out``; ``predictions``: (name, views, scores per view)."""
    out.mkdir(parents=True, exist_ok=True)
    first_scores = {s.episode: s for s in predictions[0][2]["written"]} if predictions else {}

    def f1(ep: int) -> float:
        s = first_scores.get(ep)
        return prf(s.matched, s.predicted, s.gold)[2] if s else 0.0

    order = sorted(gold, key=lambda ep: (f1(ep), ep))
    items = []
    for ep in order:
        lanes = []
        for name, views, scores in predictions:
            for view, segments in views.items():
                score = next(s for s in scores[view] if s.episode == ep)
                label = name if view == "written" else f"{name} ({view})"
                lanes.append((label, segments.get(ep, []), score))
        family = families.get(ep, "")
        title = f"Episode {ep}" + (f" · {family}" if family else "") + f" · F1 {f1(ep):.3f}"
        png = f"episode_{ep:06d}.png"
        write_bytes(out / png, png_bytes(render_episode(title, gold[ep], lanes)))
        items.append(f'<h3>{html.escape(title)}</h3><img src="{png}" width="100%">')
    names = ", ".join(html.escape(name) for name, _, _ in predictions)
    page = (
        "<!doctype html><meta charset='utf-8'><title>episcribe eval</title>"
        f"<h2>Gold and predicted subtasks, worst episodes first ({names})</h2>"
        "<p>A matched pair (IoU &ge; 0.75) has one colour in both lanes; grey matched "
        "nothing. Predictions are drawn with their outer edges set to gold's, as scored.</p>"
        + "\n".join(items)
    )
    write_text(out / "index.html", page)
    return out / "index.html"

"""Colours, fonts, text layout, resizing and encoding shared by the report's images."""

from __future__ import annotations

import io
import math
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

BG = (255, 255, 255)
INK = (33, 37, 41)
MUTED = (108, 117, 125)
GRID = (222, 226, 230)
PLACEHOLDER = (206, 212, 218)
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
    # keystates of the robot's signals
    "grasp": (170, 40, 120),
    "release": (20, 150, 160),
    "rest": (110, 110, 40),
}
# Every flat colour the timeline draws: kept exactly by the PNG's palette (see png_bytes).
UI_COLOURS = list(
    dict.fromkeys([BG, INK, MUTED, GRID, PLACEHOLDER, (0, 0, 0), *PALETTE, *KIND_COLOURS.values()])
)
JPEG_QUALITY = 80
PNG_LEVEL = 3  # zlib level: 6 is ~15% smaller and twice as slow; the palette does the rest


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
    full = text_width(text, fnt)
    if full <= width:
        return text
    if text_width("…", fnt) > width:
        return ""
    # A long prefix that fits with the ellipsis: start from the proportional guess and
    # step back by the estimated excess (two or three measurements, not a binary search).
    per_char = full / len(text)
    n = min(len(text) - 1, int(width / per_char))
    while n > 0:
        over = text_width(text[:n].rstrip() + "…", fnt) - width
        if over <= 0:
            break
        n -= max(1, int(over / per_char))
    return text[: max(n, 0)].rstrip() + "…" if n > 0 else "…"


def wrap(text: str, fnt, width: float, max_lines: int | None = None) -> list[str]:
    """Greedy word wrap to ``width`` pixels; the last kept line ends with "…" if cut."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        if text_width(paragraph, fnt) <= width:  # most lines: one measurement
            lines.append(" ".join(paragraph.split()))
            continue
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if text_width(candidate, fnt) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
                if max_lines is not None and len(lines) > max_lines:
                    break  # enough: the rest is cut anyway
            line = word if text_width(word, fnt) <= width else truncate(word, fnt, width)
        lines.append(line)
        if max_lines is not None and len(lines) > max_lines:
            break
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = truncate(lines[-1] + " …", fnt, width)
    return lines


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def short_camera(camera: str) -> str:
    return camera.rsplit(".", 1)[-1]


def fmt_t(t: float) -> str:
    if t >= 600:
        return f"{int(t // 60)}:{t % 60:04.1f}"
    return f"{t:.2f}".rstrip("0").rstrip(".") + " s" if t % 1 else f"{t:.0f} s"


def nice_step(duration: float, max_ticks: int = 16) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if duration / step <= max_ticks:
            return step
    return 3600 * math.ceil(duration / 3600 / max_ticks)


# -- drawing -------------------------------------------------------------------------
@lru_cache(maxsize=1024)
def _text_mask(text: str, fnt) -> tuple[Image.Image, int, int]:
    left, top, right, bottom = fnt.getbbox(text)
    mask = Image.new("L", (max(1, int(right - left)), max(1, int(bottom - top))))
    ImageDraw.Draw(mask).text((-left, -top), text, font=fnt, fill=255)
    return mask, int(left), int(top)


def stamp(image: Image.Image, xy: tuple[float, float], text: str, fnt, fill) -> None:
    """``draw.text(xy, text)`` for labels that recur (lane names, axis and frame times):
    FreeType renders each glyph on every call, so the rendered mask is kept."""
    mask, left, top = _text_mask(text, fnt)
    image.paste(fill, (round(xy[0]) + left, round(xy[1]) + top), mask)


def readable_on(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = colour
    return INK if (0.299 * r + 0.587 * g + 0.114 * b) > 150 else (255, 255, 255)


def placeholder(size: tuple[int, int], text: str) -> Image.Image:
    image = Image.new("RGB", size, PLACEHOLDER)
    draw = ImageDraw.Draw(image)
    fnt = font(max(9, size[1] // 9))
    lines = wrap(text, fnt, size[0] - 8, 3)
    for k, line in enumerate(lines):
        draw.text((4, 4 + k * fnt.size * 1.2), line, font=fnt, fill=INK)
    return image


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` resized to ``size`` (itself if it has that size already): box filter
    down (an area average), bilinear up.

    Both are several times cheaper than Lanczos and look the same at thumbnail size.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size == size:
        return image
    down = size[0] < image.width
    return image.resize(size, Image.Resampling.BOX if down else Image.Resampling.BILINEAR)


# -- encoding ------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _ui_palette() -> list[int]:
    return [c for rgb in UI_COLOURS for c in rgb]


def png_bytes(image: Image.Image) -> bytes:
    """A 256-colour PNG: the UI colours exactly, the rest chosen from a 1/16 sample.

    Quantizing the whole image (octree) costs ~11 ms at 1600x830; the palette of a 4x4-
    reduced copy costs <1 ms and still holds the photo strip's colours and the text's
    anti-aliasing blends (the reduction averages them too); mapping every pixel to a
    given palette without dithering costs ~2 ms.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    ui = _ui_palette()
    n_free = 256 - len(ui) // 3
    sample = image.reduce(4) if min(image.size) >= 64 else image
    sampled = sample.quantize(n_free, method=Image.Quantize.FASTOCTREE).getpalette() or []
    palette = Image.new("P", (1, 1))
    palette.putpalette(ui + sampled[: 3 * n_free])
    quantized = image.quantize(palette=palette, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    quantized.save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def jpeg_bytes(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG without the optimize pass (it halves the encoder's speed for ~5% in size)."""
    buf = io.BytesIO()
    (image if image.mode == "RGB" else image.convert("RGB")).save(
        buf, format="JPEG", quality=quality
    )
    return buf.getvalue()

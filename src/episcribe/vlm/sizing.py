"""Token arithmetic of a Qwen-VL class model: image and text tokens, budgets, context length.

One place for the numbers the client (budgets), the serve command (``--max-model-len``,
``--limit-mm-per-prompt``) and the fake server (prompt tokens, context refusal) share.

Image tokens follow the Qwen-VL processors: the image is resized to multiples of
``patch size x merge size`` (32 px for Qwen3-VL / Qwen3.5 / Qwen3.6, 28 px for Qwen2-VL /
Qwen2.5-VL), its area kept inside the processor's pixel bounds, and each square of that
side becomes one token, plus the two vision start/end markers. Text is counted at about 4
characters a token, which is what English prompts average in Qwen's tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

CHARS_PER_TOKEN = 4
VISION_MARKERS = 2  # <|vision_start|> and <|vision_end|> around each image's tokens
TEMPORAL_PATCH = 2  # video frames merged into one patch along time
MESSAGE_OVERHEAD = 4  # <|im_start|>role\n ... <|im_end|>\n
# (factor, min_pixels, max_pixels) of each processor family (preprocessor_config.json).
QWEN3 = (32, 65_536, 16_777_216)
QWEN2 = (28, 3_136, 12_845_056)

DEFAULT_THINKING_TOKENS = 4096
# Text of the longest request (instructions, narration, labels) besides its images and
# the answers it carries: a generous bound over prompts/*.txt, which run to ~1k tokens.
TEXT_ALLOWANCE = 4096
DEFAULT_MAX_IMAGES = 8


def family(model_id: str) -> tuple[int, int, int]:
    """The processor family of a model id: Qwen2/2.5-VL, else the Qwen3-VL rule."""
    name = model_id.lower()
    return QWEN2 if ("qwen2-vl" in name or "qwen2.5-vl" in name) else QWEN3


def resized(width: int, height: int, model_id: str) -> tuple[int, int]:
    """The size the processor resizes an image to (Qwen's ``smart_resize``)."""
    factor, lo, hi = family(model_id)
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > hi:
        beta = math.sqrt(height * width / hi)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < lo:
        beta = math.sqrt(lo / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return w, h


def image_tokens(width: int, height: int, model_id: str) -> int:
    factor = family(model_id)[0]
    w, h = resized(width, height, model_id)
    return (w // factor) * (h // factor) + VISION_MARKERS


def video_tokens(frames: int, width: int, height: int, model_id: str) -> int:
    """A clip's tokens: Qwen-VL merges two frames into one temporal patch, each patch
    counted as an image of the frame's size."""
    per_patch = image_tokens(width, height, model_id) - VISION_MARKERS
    return math.ceil(frames / TEMPORAL_PATCH) * per_patch + VISION_MARKERS


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def token_budgets(vlm: Mapping) -> dict[str, int]:
    """Completion budget per call kind: the config's, plus room to think when thinking is on."""
    return with_thinking(vlm.get("max_completion_tokens") or {}, vlm)


def with_thinking(budgets: Mapping[str, int], vlm: Mapping) -> dict[str, int]:
    """``budgets`` plus vlm.thinking_tokens each when thinking is on: the answer comes after
    the model's reasoning, in the same completion."""
    extra = 0
    if vlm.get("enable_thinking"):
        extra = int(vlm.get("thinking_tokens", DEFAULT_THINKING_TOKENS))
    return {kind: n + extra for kind, n in budgets.items()}


def auto_max_model_len(vlm: Mapping) -> int:
    """A context length that fits the largest request the config can produce.

    The longest request carries the most images and, in a continued conversation (the
    plan module's segment call after its describe call), an earlier answer: images x the
    tokens of the largest image (a frame at ``image_max_side`` square, the worst aspect for
    the pixel count, or ``max_image_size``, the largest contact sheet a module builds), the
    text allowance, and twice the largest budget (an earlier answer and this one's).
    Rounded up to 1024.
    """
    side = int(vlm.get("image_max_side") or 768)
    images = int(vlm.get("max_images") or DEFAULT_MAX_IMAGES)
    budgets = token_budgets(vlm)
    answers = 2 * max(budgets.values(), default=0)
    sheet = vlm.get("max_image_size") or (0, 0)
    per_image = image_tokens(side, side, vlm["model_id"])
    if sheet[0] and sheet[1]:
        per_image = max(per_image, image_tokens(*sheet, vlm["model_id"]))
    total = images * per_image + TEXT_ALLOWANCE + answers
    return math.ceil(total / 1024) * 1024

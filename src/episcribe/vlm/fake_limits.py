"""What the fake server enforces and measures the way vLLM does: tokens, limits, prefix cache.

- :func:`prompt_units` counts a request's prompt tokens with the Qwen-VL rule of
  :mod:`episcribe.vlm.sizing` (chat-template overhead per message, ~4 characters a text
  token, image tokens from the image's size) as a sequence of units: one per text part and
  one per image, in order.
- :class:`PrefixCache` says how many of those tokens repeat a prefix of an earlier
  request, unit by unit (whole texts and images, in order): what vLLM's automatic prefix
  caching would not recompute. It keeps every prefix it has seen (bounded), as a server
  with room in its KV cache would.
- :func:`check_limits` refuses, with vLLM's status, error type and wording, a request with
  more images than ``--limit-mm-per-prompt`` allows or whose prompt plus completion budget
  exceeds ``--max-model-len``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from .sizing import MESSAGE_OVERHEAD, image_tokens, text_tokens

CACHE_KEYS_MAX = 1_000_000


@dataclass(frozen=True)
class Unit:
    digest: bytes
    tokens: int
    image: bool = False


class LimitExceeded(Exception):
    """A request vLLM refuses with HTTP 400; ``param`` as vLLM names it."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message, self.param = message, param


def _digest(*parts: str) -> bytes:
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=16).digest()


def prompt_units(
    messages: list, sizes: list[tuple[int, int]], model: str, videos: list[dict] = ()
) -> list[Unit]:
    """The request's prompt as units; ``sizes`` are its images' sizes and ``videos`` its
    clips (with their ``tokens``), each in order of appearance."""
    images: Iterator[tuple[int, int]] = iter(sizes)
    clips: Iterator[dict] = iter(videos)
    units: list[Unit] = []
    for m in messages:
        role = m["role"]
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        overhead = MESSAGE_OVERHEAD
        for part in parts:
            if part.get("type") == "image_url":
                w, h = next(images)
                url = part["image_url"]["url"]
                tokens = image_tokens(w, h, model) + overhead
                units.append(Unit(_digest(role, "image", url), tokens, image=True))
            elif part.get("type") == "video_url":
                tokens = next(clips)["tokens"] + overhead
                url = part["video_url"]["url"]
                units.append(Unit(_digest(role, "video", url), tokens, image=True))
            else:
                text = part.get("text", "")
                units.append(Unit(_digest(role, "text", text), text_tokens(text) + overhead))
            overhead = 0
        if not parts:
            units.append(Unit(_digest(role, "empty"), overhead))
    return units


class PrefixCache:
    """Prefixes of earlier requests, unit by unit, as chained digests."""

    def __init__(self, max_keys: int = CACHE_KEYS_MAX):
        self.max_keys = max_keys
        self._keys: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def cached_tokens(self, units: list[Unit]) -> int:
        """Tokens of the longest prefix of ``units`` seen before; then remember all of them."""
        cached, matching, key = 0, True, b""
        with self._lock:
            for unit in units:
                key = hashlib.blake2b(key + unit.digest, digest_size=16).digest()
                if matching and key in self._keys:
                    cached += unit.tokens
                    self._keys.move_to_end(key)
                    continue
                matching = False
                self._keys[key] = None
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        return cached


def completion_budget(body: dict, prompt_tokens: int, max_model_len: int) -> int:
    """The request's completion cap (vLLM: all the context left when none is given)."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return max(0, max_model_len - prompt_tokens)


def check_limits(
    media: dict[str, tuple[int, int | None]], prompt_tokens: int, budget: int, max_model_len: int
) -> None:
    """``media``: modality -> (items in the request, its ``--limit-mm-per-prompt`` or None)."""
    for modality, (count, limit) in media.items():
        if limit is not None and count > limit:
            raise LimitExceeded(
                f"At most {limit} {modality}(s) may be provided in one prompt. "
                "Set `--limit-mm-per-prompt` to increase this limit.",
                modality,
            )
    room = max_model_len - budget
    if prompt_tokens > room:
        # vLLM stops tokenizing one token past the room left, hence "at least".
        seen = max(room, 0) + 1
        raise LimitExceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {budget} output tokens and your prompt contains at least {seen} input "
            f"tokens, for a total of at least {seen + budget} tokens. Please reduce the "
            "length of the input prompt or the number of requested output tokens. "
            f"(parameter=input_tokens, value={seen})",
            "input_tokens",
        )

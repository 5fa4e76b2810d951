"""What the fake server enforces and measures the way vLLM does: tokens, limits, prefix cache.

- :func:`prompt_units` counts a request's prompt tokens with the Qwen-VL rule of
  :mod:`episcribe.vlm.sizing` (chat-template overhead per message, ~4 characters a text
  token, image tokens from the image's size) as a sequence of units: one per text part and
  one per image, in order.
- :class:`PrefixCache` says how many of those tokens repeat a prefix of an earlier
  request, unit by unit (whole texts and images, in order): what vLLM's automatic prefix
  caching would not recompute. It keeps every prefix it has seen (bounded), as a server
  with room in its KV cache would.
- :func:`check_request` refuses what vLLM's request parsing refuses (unknown model,
  malformed messages and parts, JPEG images and mp4 clips that do not decode, an invalid
  answer schema), and :func:`request_videos` says what each clip holds.
- :func:`check_limits` refuses, with vLLM's status, error type and wording, a request with
  more images than ``--limit-mm-per-prompt`` allows or whose prompt plus completion budget
  exceeds ``--max-model-len``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from PIL import Image

from episcribe.vlm.fake_answers import schema_validator
from episcribe.vlm.sizing import MESSAGE_OVERHEAD, image_tokens, text_tokens, video_tokens

CACHE_KEYS_MAX = 1_000_000
ROLES = {"system", "user", "assistant"}
JPEG_PREFIX = "data:image/jpeg;base64,"
JPEG_EOI = b"\xff\xd9"
MP4_PREFIX = "data:video/mp4;base64,"


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


class BadRequest(Exception):
    def __init__(self, status: int, message: str, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def check_request(body: Any, model: str) -> list[tuple[int, int]]:
    """Raise BadRequest as vLLM would; return the decoded images' sizes."""
    if not isinstance(body, dict):
        raise BadRequest(400, "request body must be a JSON object")
    if body.get("model") != model:
        raise BadRequest(
            404, f"The model `{body.get('model')}` does not exist.", kind="NotFoundError"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(400, "messages must be a non-empty list")
    sizes: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRequest(400, f"messages[{i}].role must be one of {sorted(ROLES)}")
        content = m.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise BadRequest(400, f"messages[{i}].content must be a string or a list of parts")
        for j, part in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                continue
            if kind == "image_url" and m["role"] == "user":
                sizes.append(_decode_jpeg(part.get("image_url"), where))
                continue
            if kind == "video_url" and m["role"] == "user":
                continue  # request_videos decodes it
            raise BadRequest(400, f"{where}: unsupported part {kind!r} for role {m['role']!r}")
    fmt = body.get("response_format")
    if fmt is not None and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        try:
            schema_validator(schema)
        except (jsonschema.SchemaError, TypeError) as exc:
            raise BadRequest(400, f"response_format.json_schema.schema is invalid: {exc}") from None
    return sizes


def _decode_jpeg(image_url: Any, where: str) -> tuple[int, int]:
    """The size of a JPEG data URL's image, read from its header.

    The pixels are not decoded (that was most of the server's time per VQA call): the
    image must be base64, parse as a JPEG up to its frame header, and end with the JPEG
    end-of-image marker, which catches truncated images.
    """
    url = image_url.get("url") if isinstance(image_url, dict) else None
    if not isinstance(url, str) or not url.startswith(JPEG_PREFIX):
        raise BadRequest(400, f"{where}: image_url.url must be a {JPEG_PREFIX}... data URL")
    try:
        data = base64.b64decode(url[len(JPEG_PREFIX) :], validate=True)
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                raise BadRequest(400, f"{where}: the image is {im.format}, not JPEG")
            size = im.size
    except (OSError, binascii.Error, ValueError) as exc:
        raise BadRequest(400, f"{where}: cannot decode the image: {exc}") from None
    if not data.endswith(JPEG_EOI):
        raise BadRequest(400, f"{where}: cannot decode the image: it is truncated (no JPEG end)")
    return size


def request_videos(body: dict, clip_dir: str | None, model: str) -> list[dict]:
    """Decode every ``video_url`` part as vLLM would (BadRequest if it cannot) and say what
    it holds: frames, size, fps, seconds, bytes, sha256 and its prompt tokens (Qwen-VL's
    rule, ``sizing.video_tokens``). Each clip is kept as ``<clip_dir>/<sha256>.mp4`` so
    tests can play it back."""
    import av

    out = []
    for i, m in enumerate(body["messages"]):
        content = m.get("content")
        for j, part in enumerate(content if isinstance(content, list) else []):
            if part.get("type") != "video_url":
                continue
            where = f"messages[{i}].content[{j}]"
            url = (part.get("video_url") or {}).get("url")
            if not isinstance(url, str) or not url.startswith(MP4_PREFIX):
                raise BadRequest(400, f"{where}: video_url.url must be a {MP4_PREFIX}... data URL")
            try:
                data = base64.b64decode(url[len(MP4_PREFIX) :], validate=True)
                with av.open(io.BytesIO(data)) as container:
                    stream = container.streams.video[0]
                    fps = float(stream.average_rate or 0)
                    frames = [(f.width, f.height) for f in container.decode(stream)]
            except (binascii.Error, av.FFmpegError, IndexError) as exc:
                raise BadRequest(400, f"{where}: cannot decode the video: {exc}") from None
            if not frames or not fps:
                raise BadRequest(400, f"{where}: the video has no frames or no frame rate")
            (width, height), n = frames[0], len(frames)
            sha = hashlib.sha256(data).hexdigest()
            if clip_dir:
                clip = Path(clip_dir) / f"{sha}.mp4"
                clip.parent.mkdir(parents=True, exist_ok=True)
                clip.write_bytes(data)
            out.append(
                {
                    "frames": n,
                    "width": width,
                    "height": height,
                    "fps": fps,
                    "seconds": n / fps,
                    "bytes": len(data),
                    "sha256": sha,
                    "tokens": video_tokens(n, width, height, model),
                }
            )
    return out

"""The model client: bounded concurrency, retries, JSON extraction and schema checks.

One :class:`VlmClient` per job. ``complete_json`` sends one chat request whose answer must
be a JSON object valid for a schema (sent as ``response_format`` json_schema, so servers
with structured outputs constrain the decoding), within the token budget of its call kind
(``max_completion_tokens``), with thinking on or off through the chat template
(``chat_template_kwargs.enable_thinking``, which Qwen3-class templates read, merged over
``vlm.chat_template_kwargs``), and ``reasoning_effort`` when set (endpoints whose models
think by default read it). Transport trouble (connection errors, timeouts, 429, 5xx) is
retried with exponential backoff and jitter, rotating over the server replicas. An answer
that is not valid JSON for the schema gets one re-prompt that names the problem; if that
fails too, the call is logged as a WARNING, counted, and returns None: the caller skips
the row and the run goes on.
Only problems the user must fix (wrong model name, rejected API key) raise
:class:`~episcribe.errors.ServerError`.

Reasoning: a ``reasoning_content`` (or ``reasoning``) field of the answer is not read,
and thinking blocks or prose before the JSON in ``content`` are dropped. An answer cut at
its budget (``finish_reason: length``) is counted as truncated; if what arrived is not
valid JSON, it is not re-prompted (the same budget would cut it again) and the warning
names the budget to raise.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import re
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import jsonschema
import openai

from episcribe.config import api_key
from episcribe.errors import ServerError
from episcribe.vlm.sizing import with_thinking
from episcribe.vlm.slots import SlotPool

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
RETRY_STATUS = {408, 409, 429}
DEFAULT_BUDGET = 512
THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


@dataclass
class CallStats:
    calls: int = 0
    ok: int = 0
    retries: int = 0
    reprompts: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated: int = 0  # answers cut at their token budget (finish_reason length)
    cached_tokens: int = 0  # prompt tokens the server reported as served from its cache


class InvalidAnswer(ValueError):
    """The model's answer is not a JSON object valid for the schema."""


VIDEO_URL = "data:video/"


def user_message(text: str, image_urls: tuple[str, ...] | list[str] = ()) -> dict:
    """A user turn: one part per data URL (``image_url`` for a JPEG frame, ``video_url``
    for an mp4 clip, the part vLLM takes for video models), then the text.

    Media come first, as in Qwen-VL's own examples: calls over the same frames then share
    a prompt prefix that the server's prefix cache does not recompute.
    """
    parts: list[dict] = [
        {"type": "video_url", "video_url": {"url": url}}
        if url.startswith(VIDEO_URL)
        else {"type": "image_url", "image_url": {"url": url}}
        for url in image_urls
    ]
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def system_message(text: str) -> dict:
    return {"role": "system", "content": text}


def assistant_message(text: str) -> dict:
    return {"role": "assistant", "content": text}


def extract_json(text: str | None) -> dict:
    """The JSON object in a model answer; thinking blocks and ```json fences are dropped."""
    if not text or not text.strip():
        raise InvalidAnswer("the answer is empty")
    text = THINK_RE.sub("", text)
    if "</think>" in text:  # some chat templates open the block in the prompt
        text = text.rsplit("</think>", 1)[1]
    fenced = FENCE_RE.search(text)
    if fenced:
        text = fenced.group(1)
    text = text.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = _first_object(text)
    if not isinstance(value, dict):
        raise InvalidAnswer(f"the answer is {type(value).__name__}, not a JSON object")
    return value


def _first_object(text: str) -> Any:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            return decoder.raw_decode(text, match.start())[0]
        except json.JSONDecodeError:
            continue
    raise InvalidAnswer(f"the answer is not JSON: {text[:80]!r}")


class VlmClient:
    """Async chat client for JSON answers over one or more OpenAI-compatible servers."""

    def __init__(
        self,
        base_urls: list[str] | tuple[str, ...] | str,
        model: str,
        api_key: str,
        *,
        concurrency: int = 16,
        max_completion_tokens: int | Mapping[str, int] = DEFAULT_BUDGET,
        budget_keys: Mapping[str, str] | None = None,
        enable_thinking: bool = False,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        reasoning_effort: str | None = None,
        temperature: float = 0.2,
        timeout_s: float = 120,
        max_retries: int = 4,
        metrics_path: str | Path | None = None,
        slots: SlotPool | None = None,
        backoff_s: float = BACKOFF_BASE_S,
        http_client: Any = None,
    ):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("VlmClient needs at least one base URL")
        self.model = model
        self.budgets = (
            {"": max_completion_tokens}
            if isinstance(max_completion_tokens, int)
            else dict(max_completion_tokens)
        )
        # kind -> the vlm.max_completion_tokens key that sets its budget (for messages)
        self.budget_keys = dict(budget_keys or {})
        # enable_thinking wins over a key of the same name in the mapping: it also sizes
        # the budgets (vlm.thinking_tokens), which must agree with what the template does.
        self.chat_template_kwargs = {
            **(chat_template_kwargs or {}),
            "enable_thinking": enable_thinking,
        }
        self.reasoning_effort = reasoning_effort
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self.slots = slots
        self.stats = CallStats()
        self._metrics: TextIO | None = None
        self._clients = [
            (
                url,
                openai.AsyncOpenAI(
                    base_url=url,
                    api_key=api_key,
                    max_retries=0,
                    http_client=http_client or _http_client(url),
                ),
            )
            for url in urls
        ]
        self._rotation = itertools.cycle(self._clients)
        self._sem = asyncio.Semaphore(concurrency)
        self._validators: dict[str, jsonschema.protocols.Validator] = {}

    @classmethod
    def for_run(
        cls, urls: list[str], vlm: Mapping[str, Any], budgets: Mapping[str, int], **options: Any
    ) -> VlmClient:
        """A client that asks as the run's ``vlm`` settings say: model, key, thinking and
        reasoning controls, temperature, timeout, retries, and ``budgets`` (per call kind,
        before thinking) with room to think. ``options`` override or add (a judge's
        temperature, a job's metrics file and slots)."""
        settings = {
            "concurrency": vlm["client_concurrency"],
            "max_completion_tokens": with_thinking(budgets, vlm),
            "enable_thinking": vlm["enable_thinking"],
            "chat_template_kwargs": vlm["chat_template_kwargs"],
            "reasoning_effort": vlm["reasoning_effort"],
            "temperature": vlm["temperature"],
            "timeout_s": vlm["request_timeout_s"],
            "max_retries": vlm["max_retries"],
        }
        return cls(urls, vlm["model_id"], api_key(vlm), **{**settings, **options})

    async def __aenter__(self) -> VlmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        for _, client in self._clients:
            await client.close()

    async def complete_json(
        self, kind: str, messages: list[dict], schema: dict, *, temperature: float | None = None
    ) -> dict | None:
        """The answer as a dict valid for ``schema``, or None (logged and counted).

        ``temperature``: this call's, in place of the client's (e.g. 0 for a verification).
        """
        validator = self._validator(schema)
        record: dict[str, Any] = {"kind": kind, "start": time.time(), "retries": 0}
        record.update(prompt_tokens=0, completion_tokens=0, reprompted=False)
        record.update(cached_tokens=0, finish_reason=None, truncated=False)
        self.stats.calls += 1
        t0 = time.monotonic()
        conversation = list(messages)
        result, outcome, reason = None, "error", ""
        try:
            for attempt in range(2):
                text, reason = await self._send(kind, conversation, schema, record, temperature)
                if text is None:
                    outcome = "error"  # transport failure after every retry
                    break
                try:
                    value = extract_json(text)
                    _check(validator, value)
                    result, outcome = value, "ok"
                    break
                except InvalidAnswer as exc:
                    outcome, reason = "invalid", str(exc)
                if record["finish_reason"] == "length":
                    outcome = "truncated"
                    key = self.budget_keys.get(kind, kind)
                    reason = (
                        f"the answer was cut at its budget of {self.budget(kind)} tokens "
                        f"({reason}); raise vlm.max_completion_tokens.{key}"
                    )
                    break
                if attempt == 0:
                    record["reprompted"] = True
                    self.stats.reprompts += 1
                    conversation += [
                        assistant_message(text or ""),
                        user_message(
                            f"Your answer could not be used: {reason}. Answer again with only "
                            "one JSON object that matches the requested schema, and no other text."
                        ),
                    ]
        finally:
            record.update(outcome=outcome, end=time.time(), latency_s=time.monotonic() - t0)
            self._write_metrics(record)
        if result is None:
            self.stats.failures += 1
            log.warning("%s call failed (%s): %s", kind, outcome, reason)
        else:
            self.stats.ok += 1
        return result

    async def _send(
        self,
        kind: str,
        messages: list[dict],
        schema: dict,
        record: dict,
        temperature: float | None = None,
    ) -> tuple[str | None, str]:
        """One request with retries: (answer text, "") or (None, why it failed)."""
        body = self._body(kind, messages, schema, temperature)
        reason = ""
        for attempt in range(self.max_retries + 1):
            url, client = next(self._rotation)
            retry_after = None
            try:
                async with AsyncExitStack() as stack:
                    await stack.enter_async_context(self._sem)
                    if self.slots is not None:
                        await stack.enter_async_context(self.slots.slot())
                    async with asyncio.timeout(self.timeout_s + 1):
                        raw = await client.post(
                            "/chat/completions",
                            content=body,
                            cast_to=bytes,
                            options={"timeout": self.timeout_s},
                        )
                return self._answer(raw, url, record)
            except (openai.APIConnectionError, TimeoutError) as exc:
                reason = f"{type(exc).__name__} from {url}"
            except openai.APIStatusError as exc:
                code = exc.status_code
                if code in (401, 403):
                    raise ServerError(
                        f"{url} rejected the API key (HTTP {code}); check the environment "
                        "variable that vlm.api_key_env names"
                    ) from None
                if code == 404:
                    raise ServerError(
                        f"model {self.model!r} is not served at {url} (HTTP 404: "
                        f"{_message(exc)}); check vlm.model_id and vlm.api_base"
                    ) from None
                reason = f"HTTP {code} from {url}: {_message(exc)}"
                if code not in RETRY_STATUS and code < 500:
                    return None, reason  # the request itself is at fault: retrying won't help
                retry_after = _retry_after(exc)
            if attempt < self.max_retries:
                record["retries"] += 1
                self.stats.retries += 1
                await asyncio.sleep(self._backoff(attempt, retry_after))
        return None, f"{reason} (after {self.max_retries} retries)"

    def request_body(
        self, kind: str, messages: list[dict], schema: dict, temperature: float | None = None
    ) -> bytes:
        """The exact bytes a ``complete_json`` call sends first (before any re-prompt)."""
        return self._body(kind, messages, schema, temperature)

    def budget(self, kind: str) -> int:
        """The completion-token budget of a call kind (or the client's one budget)."""
        for key in (kind, ""):
            if key in self.budgets:
                return self.budgets[key]
        return DEFAULT_BUDGET

    def _body(
        self, kind: str, messages: list[dict], schema: dict, temperature: float | None = None
    ) -> bytes:
        """The request body, byte for byte what ``chat.completions.create`` would send.

        The SDK's ``create`` walks every message part through its type-driven transform
        and parses the answer into pydantic models: ~2-3 ms of CPU per call, more than the
        rest of a VQA call. The body here is the same JSON (same keys, order and
        separators: tests compare the bytes), posted through the same client, so
        transport, status errors and timeouts are still the SDK's.
        """
        payload = {
            "model": self.model,
            "messages": messages,
            "max_completion_tokens": self.budget(kind),
        }
        if self.reasoning_effort is not None:  # where the SDK puts it, when given
            payload["reasoning_effort"] = self.reasoning_effort
        payload |= {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": kind, "schema": schema, "strict": True},
            },
            "temperature": self.temperature if temperature is None else temperature,
            "chat_template_kwargs": self.chat_template_kwargs,
        }
        return json.dumps(
            payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()

    def _answer(self, raw: bytes, url: str, record: dict) -> tuple[str | None, str]:
        """The answer text of a chat completion body; tokens counted."""
        try:
            data = json.loads(raw)
        except ValueError:
            return None, f"{url} answered with a body that is not JSON: {raw[:80]!r}"
        if not isinstance(data, dict):
            return None, f"{url} answered with JSON that is not a chat completion"
        usage = data.get("usage")
        if isinstance(usage, dict):
            prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
            details = usage.get("prompt_tokens_details")
            cached = _count(details, "cached_tokens") if isinstance(details, dict) else 0
            record["prompt_tokens"] += prompt
            record["completion_tokens"] += completion
            record["cached_tokens"] += cached
            self.stats.prompt_tokens += prompt
            self.stats.completion_tokens += completion
            self.stats.cached_tokens += cached
        choices = data.get("choices")
        if not choices:
            return None, f"{url} answered without choices"
        first = choices[0] if isinstance(choices, list) else None
        finish = first.get("finish_reason") if isinstance(first, dict) else None
        record["finish_reason"] = finish if isinstance(finish, str) else None
        if finish == "length":
            record["truncated"] = True
            self.stats.truncated += 1
        message = first.get("message") if isinstance(first, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        return (content if isinstance(content, str) else ""), ""

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(BACKOFF_CAP_S, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
        return max(delay, min(retry_after or 0.0, BACKOFF_CAP_S))

    def _validator(self, schema: dict) -> jsonschema.protocols.Validator:
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
            validator = self._validators[key] = cls(schema)
        return validator

    def _write_metrics(self, record: dict) -> None:
        """Append one line, flushed at once (the file is whole if the job is killed).

        The file stays open between calls: a mkdir, open and close per call cost more than
        the write.
        """
        if self.metrics_path is None:
            return
        if self._metrics is None:
            self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
            self._metrics = open(self.metrics_path, "a", encoding="utf-8")
        self._metrics.write(json.dumps(record, sort_keys=True) + "\n")
        self._metrics.flush()


def _check(validator: jsonschema.protocols.Validator, value: dict) -> None:
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the top level"
        raise InvalidAnswer(f"at {where}: {error.message[:300]}")


def _http_client(url: str) -> Any:
    """None (the SDK's default client), or for a plain-http endpoint one without TLS setup.

    The default client loads the CA bundle into an SSL context, ~60-80 ms of CPU per
    client, once per job and replica; a plain-http URL (a local vLLM, the fake server)
    never uses it. Everything else (limits, timeouts, redirects) is the SDK's default.
    """
    if not url.startswith("http://"):
        return None
    return openai.DefaultAsyncHttpxClient(verify=False)


def _count(usage: dict, key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
    return str(exc.message)[:300]


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after", ""))
    except (ValueError, AttributeError):
        return None

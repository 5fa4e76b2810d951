"""A fake OpenAI-compatible chat server: its own process, strict like a real one.

    python -m episcribe.vlm.fake_server --host 127.0.0.1 --port 8011 --model M \\
        --latency-ms 300 --max-concurrency 16 --fault-rate 0.1 --request-log calls.jsonl \\
        [--max-model-len N] [--limit-mm-per-prompt '{"image": 8}'] \\
        [--structured-outputs-config '{"backend": "xgrammar", "disable_any_whitespace": true}'] \\
        [--reasoning-parser qwen3] [--enable-prompt-tokens-details]

Tests, the demo and the benchmarks drive the real request path against it (the same
``vlm.backend`` switch that starts vLLM starts this instead). It checks requests the way
vLLM does (model name, message roles, content part types, JPEG data URLs), answers with
JSON valid for the request's ``response_format`` schema that reads like short robot
manipulation English (:mod:`episcribe.vlm.fake_answers`), and is deterministic: the
answer is seeded by a hash of the request.

- ``--latency-ms``: sleep per call; ``--max-concurrency`` > 0: calls beyond it queue, as
  on a saturated GPU.
- ``--fault-rate``: that share of calls, chosen by arrival order (deterministic), is
  answered with a fault; faults cycle through ``--fault-cycle`` (default: HTTP 500, a
  timeout that holds the connection, non-JSON text, schema-violating JSON).
- ``--oracle truth.jsonl`` (+ ``--oracle-jitter-s``, ``--oracle-merge-rate``,
  ``--oracle-swap-rate``, ``--oracle-seed``): segment calls are answered with the truth
  file's segments of the request's episode, noised (:mod:`episcribe.vlm.fake_oracle`).
- ``--request-log``: one JSON line per call: arrival, start (after queueing), end
  (before the reply), kind, task (the "Task:" line of the prompt, if any), n_images,
  image_sizes, request_bytes, status, fault,
  prompt_tokens, image_tokens, cached_tokens (what vLLM's prefix caching would not
  recompute), completion_tokens, finish_reason, the clips of ``video_url`` parts
  (``videos``: frames, size, fps, bytes, tokens; each clip is kept beside the log), and
  ``sampling``: the request's temperature, max_completion_tokens, chat_template_kwargs and
  reasoning_effort, as sent.
- ``--keep-requests DIR``: every well-formed request body as ``DIR/<n>.json`` (n counts
  from 1 in arrival order), so a test can look at exactly what was sent (e.g. decode a
  contact sheet).

As vLLM serving a Qwen-VL model does (the vLLM flags above have vLLM's meaning): prompt
tokens are counted with the Qwen-VL image rule (:mod:`episcribe.vlm.fake_limits`); a
prompt plus its completion budget over ``--max-model-len`` (default 262144) and more
images than ``--limit-mm-per-prompt`` are refused with vLLM's 400; an answer longer than
``max_completion_tokens`` is cut with ``finish_reason: length``; the model thinks first
(a ``<think>`` block in ``content``, or ``reasoning_content`` with ``--reasoning-parser``)
unless ``chat_template_kwargs.enable_thinking`` is false; and the ``whitespace`` fault
pads the JSON with whitespace until the budget runs out, unless the structured-outputs
config disables free whitespace.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from episcribe.vlm.fake_answers import (
    Request,
    answer,
    generation,
    instruction,
    max_items,
    observation,
    runaway,
)
from episcribe.vlm.fake_limits import (
    BadRequest,
    LimitExceeded,
    PrefixCache,
    check_limits,
    check_request,
    completion_budget,
    prompt_units,
    request_videos,
)
from episcribe.vlm.fake_oracle import Noise, Oracle

FAULTS = ("500", "429", "timeout", "nonjson", "schema", "whitespace")
DEFAULT_MAX_MODEL_LEN = 262_144
DEFAULT_FAULT_CYCLE = ("500", "timeout", "nonjson", "schema")
TIMEOUT_HOLD_S = 60.0
# The request fields that steer the model's answer, logged as sent.
SAMPLING = ("temperature", "max_completion_tokens", "chat_template_kwargs", "reasoning_effort")

# -- request checking ----------------------------------------------------------------


# -- the HTTP server -----------------------------------------------------------------


class FakeState:
    def __init__(self, args: argparse.Namespace):
        self.model = args.model
        self.latency_s = args.latency_ms / 1000.0
        self.gate = (
            threading.BoundedSemaphore(args.max_concurrency) if args.max_concurrency else None
        )
        self.fault_rate = args.fault_rate
        self.fault_cycle = (
            tuple(args.fault_cycle.split(",")) if args.fault_cycle else DEFAULT_FAULT_CYCLE
        )
        self.max_model_len = args.max_model_len
        self.image_limit = args.limit_mm_per_prompt.get("image")
        self.video_limit = args.limit_mm_per_prompt.get("video")
        self.compact_json = bool(args.structured_outputs_config.get("disable_any_whitespace"))
        self.reasoning_field = bool(args.reasoning_parser)
        self.prompt_details = args.enable_prompt_tokens_details
        self.prefixes = PrefixCache()
        self.lock = threading.Lock()
        self.arrivals = 0
        self.faults = 0
        self.log = open(args.request_log, "a", encoding="utf-8") if args.request_log else None
        self.clip_dir = str(Path(args.request_log).parent / "clips") if args.request_log else None
        self.oracle = (
            Oracle(
                args.oracle,
                Noise(
                    args.oracle_jitter_s,
                    args.oracle_merge_rate,
                    args.oracle_swap_rate,
                    args.oracle_seed,
                ),
            )
            if args.oracle
            else None
        )
        self.keep_dir = Path(args.keep_requests) if args.keep_requests else None
        if self.keep_dir is not None:
            self.keep_dir.mkdir(parents=True, exist_ok=True)
        self.kept = 0

    def oracle_answer(self, req: Request) -> str | None:
        """The truth file's answer to a segment or label_segment call (oracle mode), or None."""
        if self.oracle is None or req.kind not in ("segment", "label_segment"):
            return None
        if req.kind == "label_segment":
            value = self.oracle.label(req.text, req.times)
        else:
            _, most = max_items(req.schema, "subtasks", default=8)
            value = self.oracle.segment(req.text, req.times, most)
        return json.dumps(value) if value is not None else None

    def keep(self, raw: bytes) -> None:
        if self.keep_dir is not None:
            with self.lock:
                self.kept += 1
                n = self.kept
            (self.keep_dir / f"{n}.json").write_bytes(raw)

    def next_fault(self) -> str | None:
        with self.lock:
            self.arrivals += 1
            n, rate = self.arrivals, self.fault_rate
            if int(n * rate) == int((n - 1) * rate):
                return None
            self.faults += 1
            return self.fault_cycle[(self.faults - 1) % len(self.fault_cycle)]

    def record(self, entry: dict) -> None:
        if self.log is not None:
            with self.lock:
                self.log.write(json.dumps(entry) + "\n")
                self.log.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle and delayed ACK stall
        # every reply.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def do_GET(self) -> None:
        state = self.server.state
        if self.path == "/health":
            self._send(200, b"", "text/plain")
        elif self.path == "/v1/models":
            model = {"id": state.model, "object": "model", "created": 0, "owned_by": "episcribe"}
            self._json(200, {"object": "list", "data": [model]})
        else:
            self._error(404, f"no route {self.path}", "NotFoundError")

    def do_POST(self) -> None:
        state = self.server.state
        arrival = time.time()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        entry: dict[str, Any] = {"arrival": arrival, "request_bytes": len(raw), "kind": None}
        entry.update(n_images=0, fault=None)
        if self.path != "/v1/chat/completions":
            return self._finish(
                entry, 404, {"error": _err(f"no route {self.path}", "NotFound", 404)}
            )
        try:
            body = json.loads(raw)
            sizes = check_request(body, state.model)
            videos = entry["videos"] = request_videos(body, state.clip_dir, state.model)
        except json.JSONDecodeError as exc:
            return self._finish(
                entry, 400, {"error": _err(f"invalid JSON: {exc}", "BadRequest", 400)}
            )
        except BadRequest as exc:
            return self._finish(
                entry, exc.status, {"error": _err(exc.message, exc.kind, exc.status)}
            )
        req = Request(body, sizes)
        state.keep(raw)
        entry.update(kind=req.kind, task=req.task, n_images=len(sizes))
        entry["sampling"] = {k: body[k] for k in SAMPLING if k in body}
        entry["image_sizes"] = [list(s) for s in sizes]
        units = prompt_units(body["messages"], sizes, state.model, videos)
        req.prompt_tokens = sum(u.tokens for u in units)
        req.budget = completion_budget(body, req.prompt_tokens, state.max_model_len)
        entry.update(
            prompt_tokens=req.prompt_tokens,
            image_tokens=sum(u.tokens for u in units if u.image),
        )
        try:
            check_limits(
                {
                    "image": (len(sizes), state.image_limit),
                    "video": (len(videos), state.video_limit),
                },
                req.prompt_tokens,
                req.budget,
                state.max_model_len,
            )
        except LimitExceeded as exc:
            error = _err(exc.message, "BadRequestError", 400)
            return self._finish(entry, 400, {"error": dict(error, param=exc.param)})
        req.cached_tokens = entry["cached_tokens"] = state.prefixes.cached_tokens(units)
        if state.gate is not None:
            state.gate.acquire()
        try:
            entry["start"] = time.time()
            fault = entry["fault"] = state.next_fault()
            if fault == "timeout":
                self._hold(TIMEOUT_HOLD_S)
                entry.update(end=time.time(), status=0)
                state.record(entry)
                self.close_connection = True
                return
            if state.latency_s > 0:
                time.sleep(state.latency_s)
            if fault in ("500", "429"):
                code = int(fault)
                msg = "Internal server error (injected)" if code == 500 else "Too many requests"
                return self._fail(entry, code, msg, "ServerError")
            digest = hashlib.sha256(raw).digest()
            rng = random.Random(digest)
            if fault == "nonjson":
                content = f"Sure! {observation(rng)} I think the task is going well."
            elif fault == "schema":
                content = json.dumps({"unexpected": instruction(rng)})
            else:
                content = state.oracle_answer(req) or answer(req, rng)
            if fault == "whitespace" and state.compact_json:
                entry["fault"] = None  # the grammar allows no free whitespace to run on with
            elif fault == "whitespace":
                content = runaway(content, req.budget)
            reply = generation(req, content, rng, state.reasoning_field)
            entry.update(
                completion_tokens=reply["completion_tokens"], finish_reason=reply["finish_reason"]
            )
            payload = _completion(state.model, digest, reply, req, state.prompt_details)
            self._finish(entry, 200, payload)
        finally:
            if state.gate is not None:
                state.gate.release()

    # helpers

    def _finish(self, entry: dict, status: int, payload: dict) -> None:
        entry.setdefault("start", entry["arrival"])
        entry.update(end=time.time(), status=status)
        self.server.state.record(entry)
        self._json(status, payload)

    def _fail(self, entry: dict, status: int, message: str, kind: str) -> None:
        self._finish(entry, status, {"error": _err(message, kind, status)})

    def _hold(self, seconds: float) -> None:
        """Say nothing until ``seconds`` pass or the client hangs up (a stuck server)."""
        deadline = time.monotonic() + seconds
        sock = self.connection
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                try:
                    if not sock.recv(1, socket.MSG_PEEK):
                        return
                except OSError:
                    return

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: int, message: str, kind: str) -> None:
        self._json(status, {"error": _err(message, kind, status)})

    def _send(self, status: int, data: bytes, ctype: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _err(message: str, kind: str, code: int) -> dict:
    return {"message": message, "type": kind, "param": None, "code": code}


def _completion(model: str, digest: bytes, reply: dict, req: Request, details: bool) -> dict:
    usage: dict[str, Any] = {
        "prompt_tokens": req.prompt_tokens,
        "completion_tokens": reply["completion_tokens"],
        "total_tokens": req.prompt_tokens + reply["completion_tokens"],
    }
    if details:
        usage["prompt_tokens_details"] = {"cached_tokens": req.cached_tokens}
    return {
        "id": "chatcmpl-" + digest.hex()[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": reply["message"],
                "finish_reason": reply["finish_reason"],
                "logprobs": None,
            }
        ],
        "usage": usage,
    }


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: FakeState):
        super().__init__(address, Handler)
        self.state = state


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m episcribe.vlm.fake_server", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--max-concurrency", type=int, default=0)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-cycle", default="", help=f"comma list of {','.join(FAULTS)}")
    p.add_argument("--request-log", default=None)
    p.add_argument("--keep-requests", default=None, help="directory for every request body")
    p.add_argument("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN)
    p.add_argument("--limit-mm-per-prompt", type=_json_object, default={})
    p.add_argument("--structured-outputs-config", type=_json_object, default={})
    p.add_argument("--reasoning-parser", default="")
    p.add_argument("--enable-prompt-tokens-details", action="store_true")
    p.add_argument("--oracle", default=None, help="truth JSONL: answer segment calls with it")
    p.add_argument("--oracle-jitter-s", type=float, default=0.0)
    p.add_argument("--oracle-merge-rate", type=float, default=0.0)
    p.add_argument("--oracle-swap-rate", type=float, default=0.0)
    p.add_argument("--oracle-seed", type=int, default=0)
    args = p.parse_args(argv)
    unknown = set(filter(None, args.fault_cycle.split(","))) - set(FAULTS)
    if unknown:
        p.error(f"unknown faults {sorted(unknown)}; choose from {FAULTS}")
    return args


def _json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object")
    return value


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        httpd = FakeServer((args.host, args.port), FakeState(args))
    except OSError as exc:
        sys.exit(f"fake server: cannot listen on {args.host}:{args.port}: {exc}")
    print(f"fake server for {args.model} on http://{args.host}:{args.port}/v1", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()

"""A fake OpenAI-compatible chat server: its own process, strict like a real one.

    python -m episcribe.vlm.fake_server --host 127.0.0.1 --port 8011 --model M \\
        --latency-ms 300 --max-concurrency 16 --fault-rate 0.1 --request-log calls.jsonl

Tests, the demo and the benchmarks drive the real request path against it (the same
``vlm.backend`` switch that starts vLLM starts this instead). It checks requests the way
vLLM does (model name, message roles, content part types, JPEG data URLs), answers with
JSON valid for the request's ``response_format`` schema, reads like short robot
manipulation English, and is deterministic: the answer is seeded by a hash of the request.

- ``--latency-ms``: sleep per call; ``--max-concurrency`` > 0: calls beyond it queue, as
  on a saturated GPU.
- ``--fault-rate``: that share of calls, chosen by arrival order (deterministic), is
  answered with a fault; faults cycle through ``--fault-cycle`` (default: HTTP 500, a
  timeout that holds the connection, non-JSON text, schema-violating JSON).
- ``--request-log``: one JSON line per call: arrival, start (after queueing), end
  (before the reply), kind, n_images, videos, request_bytes, status, fault; the clips
  of ``video_url`` parts are kept beside it (``request_videos``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import json
import random
import re
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
from PIL import Image

FAULTS = ("500", "429", "timeout", "nonjson", "schema")
DEFAULT_FAULT_CYCLE = ("500", "timeout", "nonjson", "schema")
TIMEOUT_HOLD_S = 60.0
ROLES = {"system", "user", "assistant"}
JPEG_PREFIX = "data:image/jpeg;base64,"
JPEG_EOI = b"\xff\xd9"
MP4_PREFIX = "data:video/mp4;base64,"
TIMESTAMPS_RE = re.compile(r"Frame timestamps \(s\):\s*([-0-9.,\s]+)")
TASK_RE = re.compile(r"^Task:\s*(.+)$", re.MULTILINE)
NORMALIZED = "Coordinate system: normalized 0-1000"

VERBS = ("reach for", "grasp", "lift", "move", "place", "open", "close", "push", "rotate")
OBJECTS = ("bottle", "cup", "block", "drawer", "lid", "sponge", "towel", "bowl", "box")
COLORS = ("red", "blue", "green", "yellow", "white", "black")
PLACES = ("the table", "the tray", "the bin", "the shelf", "the left side", "the right side")
RELATIONS = ("left of", "right of", "behind", "in front of", "on top of", "next to")
ATTRIBUTES = {"color": COLORS, "state": ("open", "closed", "empty", "full", "upright")}


# -- text that reads like robot manipulation -----------------------------------------


def _thing(rng: random.Random) -> str:
    return f"{rng.choice(COLORS)} {rng.choice(OBJECTS)}"


def instruction(rng: random.Random) -> str:
    verb = rng.choice(VERBS)
    tail = f" to {rng.choice(PLACES)}" if verb in ("move", "place", "push") else ""
    return f"{verb.capitalize()} the {_thing(rng)}{tail}"


def observation(rng: random.Random) -> str:
    arm = rng.choice(("left", "right"))
    return f"The {arm} gripper is {rng.choice(('near', 'above', 'holding', 'beside'))} the " + (
        f"{_thing(rng)} on {rng.choice(PLACES)}."
    )


def sentence(rng: random.Random) -> str:
    return rng.choice((instruction(rng) + ".", observation(rng)))


# -- a generic generator for JSON Schemas --------------------------------------------


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        return _resolve(node, root)
    return schema


def generate(schema: dict, rng: random.Random, root: dict | None = None) -> Any:
    """A value valid for ``schema`` (the subset structured-output servers support)."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return generate(schema[key][0], rng, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((t for t in kind if t != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties", {})
        return {name: generate(sub, rng, root) for name, sub in props.items()}
    if kind == "array":
        lo = schema.get("minItems", 1)
        hi = schema.get("maxItems", max(lo, 3))
        items = [generate(schema.get("items", {}), rng, root) for _ in range(rng.randint(lo, hi))]
        if schema.get("uniqueItems"):
            items = _unique(items, schema.get("items", {}), rng, root)
        return items
    if kind == "string":
        text = sentence(rng)
        text = text + " ok" * max(0, schema.get("minLength", 0) - len(text))
        return text[: schema.get("maxLength", len(text))]
    if kind in ("integer", "number"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        hi = schema.get("maximum", schema.get("exclusiveMaximum", lo + 11) - 1)
        return rng.randint(int(lo), int(hi)) if kind == "integer" else round(rng.uniform(lo, hi), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def _unique(items: list, item_schema: dict, rng: random.Random, root: dict) -> list:
    seen: list = []
    for item in items:
        tries = 0
        while item in seen and tries < 20:
            item, tries = generate(item_schema, rng, root), tries + 1
        if item in seen and isinstance(item, str):
            item = f"{item} ({len(seen)})"
        seen.append(item)
    return seen


# -- plausible answers per call kind -------------------------------------------------


class Request:
    """What the answer generators need from one chat request."""

    def __init__(self, body: dict, image_sizes: list[tuple[int, int]]):
        fmt = body.get("response_format") or {}
        spec = fmt.get("json_schema") or {}
        self.kind: str | None = spec.get("name")
        self.schema: dict | None = spec.get("schema") if fmt.get("type") == "json_schema" else None
        self.text = "\n".join(_texts(body["messages"]))
        self.image_sizes = image_sizes
        match = TIMESTAMPS_RE.search(self.text)
        times = [float(t) for t in re.findall(r"-?\d+(?:\.\d+)?", match.group(1))] if match else []
        self.times = times or [0.0]
        task = TASK_RE.search(self.text)
        self.task = task.group(1).strip().rstrip(".") if task else None
        if NORMALIZED in self.text or not image_sizes:
            self.width = self.height = 1000
        else:
            self.width, self.height = image_sizes[0]


def _max_items(schema: dict | None, *path: str, default: int) -> tuple[int, int]:
    node = schema or {}
    for key in path:
        node = node.get("properties", {}).get(key, {})
    lo = node.get("minItems", 1)
    return lo, node.get("maxItems", max(lo, default))


def _segment(req: Request, rng: random.Random) -> dict:
    lo, hi = _max_items(req.schema, "subtasks", default=4)
    first, last = req.times[0], req.times[-1]
    n = max(lo, min(hi, rng.randint(2, 4)))
    cuts = sorted(rng.uniform(first, last) for _ in range(n - 1))
    bounds = [first, *(round(c, 3) for c in cuts), last]
    return {
        "subtasks": [
            {"instruction": instruction(rng), "start": bounds[i], "end": bounds[i + 1]}
            for i in range(n)
        ]
    }


def _rephrasings(req: Request, rng: random.Random) -> dict:
    lo, hi = _max_items(req.schema, "rephrasings", default=5)
    n = max(lo, min(hi, 5))
    task = req.task or instruction(rng).lower()
    openers = ("Please", "Could you", "Go ahead and", "I need you to", "Now", "Carefully")
    out: list[str] = []
    while len(out) < n:
        line = f"{openers[len(out) % len(openers)]} {task[0].lower() + task[1:]}"
        line += "" if len(out) < len(openers) else f", step {len(out)}"
        out.append(line + ("?" if line.startswith("Could") else "."))
    return {"rephrasings": out}


def _bbox(req: Request, rng: random.Random) -> list[int]:
    w, h = req.width, req.height
    x1, y1 = rng.randint(0, w // 2), rng.randint(0, h // 2)
    return [x1, y1, rng.randint(x1 + 1, w - 1), rng.randint(y1 + 1, h - 1)]


def _vqa(req: Request, rng: random.Random, kind: str) -> dict:
    label = rng.choice(OBJECTS)
    if kind == "vqa_bbox":
        question, answer = (
            f"Where is the {label}?",
            {"detections": [{"label": label, "bbox_format": "xyxy", "bbox": _bbox(req, rng)}]},
        )
    elif kind == "vqa_keypoint":
        point = [rng.randint(0, req.width - 1), rng.randint(0, req.height - 1)]
        question = f"Point at the {label}."
        answer = {"label": label, "point_format": "xy", "point": point}
    elif kind == "vqa_count":
        question = f"How many {label}s are visible?"
        answer = {"label": label, "count": rng.randint(1, 3)}
    elif kind == "vqa_attribute":
        attribute = rng.choice(sorted(ATTRIBUTES))
        question = f"What is the {attribute} of the {label}?"
        answer = {
            "label": label,
            "attribute": attribute,
            "value": rng.choice(ATTRIBUTES[attribute]),
        }
    else:
        other = rng.choice([o for o in OBJECTS if o != label])
        relation = rng.choice(RELATIONS)
        question = f"Where is the {label} relative to the {other}?"
        answer = {"subject": label, "relation": relation, "object": other}
    return {"question": question, "answer": answer}


def plausible(req: Request, rng: random.Random) -> dict | None:
    kind = req.kind or ""
    if kind == "describe":
        return {"narration": [{"time": t, "observation": observation(rng)} for t in req.times]}
    if kind == "segment":
        return _segment(req, rng)
    if kind == "task_rephrasings":
        return _rephrasings(req, rng)
    if kind == "derive_task":
        return {"task": instruction(rng)}
    if kind == "memory":
        return {"memory": f"Done so far: {instruction(rng).lower()}."}
    if kind == "initial_speech":
        return {"speech": f"Okay, I will {instruction(rng).lower()}."}
    if kind == "interjection":
        return {"interjection": f"Actually, {instruction(rng).lower()} first.", "speech": "Sure."}
    if kind == "plan_refresh":
        return {"plan": [instruction(rng) for _ in range(rng.randint(2, 4))]}
    if kind.startswith("vqa_"):
        return _vqa(req, rng, kind)
    return None


def answer(req: Request, rng: random.Random) -> str:
    if req.schema is None:
        return sentence(rng)
    value = plausible(req, rng)
    if value is None or not _valid(value, req.schema):
        value = generate(req.schema, rng)
    return json.dumps(value)


def _valid(value: Any, schema: dict) -> bool:
    return schema_validator(schema).is_valid(value)


# Checking a schema against its meta-schema and building its validator cost ~2.5 ms each;
# a run sends the same dozen schemas thousands of times, so both are done once per schema.
# The cache is bounded (plan schemas vary in minItems/maxItems, a client could vary more).
_VALIDATORS: dict[str, Any] = {}
_VALIDATORS_MAX = 512


def schema_validator(schema: Any) -> jsonschema.protocols.Validator:
    """The (cached) validator of a JSON Schema; raises SchemaError/TypeError if it is invalid."""
    try:
        key = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the schema is not JSON: {exc}") from None
    found = _VALIDATORS.get(key)
    if found is None:
        try:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
            found = cls(schema)
        except (jsonschema.SchemaError, TypeError) as exc:
            found = exc
        if len(_VALIDATORS) >= _VALIDATORS_MAX:
            _VALIDATORS.clear()
        _VALIDATORS[key] = found  # dict assignment is atomic: handler threads may share it
    if isinstance(found, Exception):
        raise found
    return found


# -- request checking ----------------------------------------------------------------


class BadRequest(Exception):
    def __init__(self, status: int, message: str, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _texts(messages: list) -> list[str]:
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p.get("text", "") for p in content if p.get("type") == "text")
    return out


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


def request_videos(body: dict, clip_dir: str | None) -> list[dict]:
    """Decode every ``video_url`` part as vLLM would (BadRequest if it cannot) and say what
    it holds: frames, size, fps, seconds, bytes, sha256 and its prompt tokens, counted as
    Qwen2.5-VL does (a token per 28x28 pixels, two frames per temporal patch). Each clip
    is kept as ``<clip_dir>/<sha256>.mp4`` so tests can play it back."""
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
            tokens = -(-n // 2) * -(-width // 28) * -(-height // 28)
            out.append(
                {
                    "frames": n,
                    "width": width,
                    "height": height,
                    "fps": fps,
                    "seconds": n / fps,
                    "bytes": len(data),
                    "sha256": sha,
                    "tokens": tokens,
                }
            )
    return out


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
        self.lock = threading.Lock()
        self.arrivals = 0
        self.faults = 0
        self.log = open(args.request_log, "a", encoding="utf-8") if args.request_log else None
        self.clip_dir = str(Path(args.request_log).parent / "clips") if args.request_log else None

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
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add 40 ms.
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
            videos = entry["videos"] = request_videos(body, state.clip_dir)
        except json.JSONDecodeError as exc:
            return self._finish(
                entry, 400, {"error": _err(f"invalid JSON: {exc}", "BadRequest", 400)}
            )
        except BadRequest as exc:
            return self._finish(
                entry, exc.status, {"error": _err(exc.message, exc.kind, exc.status)}
            )
        req = Request(body, sizes)
        entry.update(kind=req.kind, n_images=len(sizes))
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
                content = answer(req, rng)
            payload = _completion(state.model, digest, content, req)
            video_tokens = sum(v["tokens"] for v in videos)
            payload["usage"]["prompt_tokens"] += video_tokens
            payload["usage"]["total_tokens"] += video_tokens
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


def _completion(model: str, digest: bytes, content: str, req: Request) -> dict:
    prompt_tokens = len(req.text) // 4 + 256 * len(req.image_sizes)
    return {
        "id": "chatcmpl-" + digest.hex()[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(content) // 4 + 1,
            "total_tokens": prompt_tokens + len(content) // 4 + 1,
        },
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
    args = p.parse_args(argv)
    unknown = set(filter(None, args.fault_cycle.split(","))) - set(FAULTS)
    if unknown:
        p.error(f"unknown faults {sorted(unknown)}; choose from {FAULTS}")
    return args


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

"""The fake OpenAI server, as its own process over real HTTP: strict, schema-valid, deterministic.

``run_fake`` is also used by the client and server tests.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

MODEL = "fake/model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base.removesuffix("/v1") + "/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def run_fake(tmp_path: Path, *args: str, name: str = "fake"):
    """A fake server process; yields (base_url, request_log_path). Always stopped."""
    port = free_port()
    log = tmp_path / f"{name}_requests.jsonl"
    cmd = [sys.executable, "-m", "episcribe.vlm.fake_server", "--port", str(port)]
    cmd += ["--model", MODEL, "--request-log", str(log), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        assert wait_until(lambda: healthy(base) or proc.poll() is not None, 15), "no /health"
        assert proc.poll() is None, proc.stderr.read().decode()
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        proc.stderr.close()


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    best = current = 0
    for _, step in events:  # at equal times, ends (-1) sort first
        current += step
        best = max(best, current)
    return best


def jpeg_url(size=(160, 120)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 140, 30)).save(buf, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def post(base: str, body: dict, timeout: float = 10) -> tuple[int, dict | str]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(
        base + "/chat/completions", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def chat(kind: str, schema: dict, text: str, images=(), model: str = MODEL, **extra) -> dict:
    """A request as the client sends it: images first, thinking off (unless ``extra`` says)."""
    parts = [{"type": "image_url", "image_url": {"url": u}} for u in images]
    parts += [{"type": "text", "text": text}]
    return {
        "model": model,
        "messages": [{"role": "user", "content": parts}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": kind, "schema": schema, "strict": True},
        },
        "chat_template_kwargs": {"enable_thinking": False},
        **extra,
    }


def obj(**props) -> dict:
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


STR, NUM = {"type": "string"}, {"type": "number"}
SCHEMAS = {
    "describe": obj(narration={"type": "array", "items": obj(time=NUM, observation=STR)}),
    "segment": obj(
        subtasks={
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": obj(instruction=STR, start=NUM, end=NUM),
        }
    ),
    "task_rephrasings": obj(
        rephrasings={"type": "array", "items": STR, "minItems": 10, "maxItems": 10}
    ),
    "vqa_bbox": obj(
        question=STR,
        answer=obj(
            detections={
                "type": "array",
                "items": obj(
                    label=STR,
                    bbox_format={"const": "xyxy"},
                    bbox={"type": "array", "items": NUM, "minItems": 4, "maxItems": 4},
                ),
            }
        ),
    ),
    "vqa_keypoint": obj(
        question=STR,
        answer=obj(
            label=STR,
            point_format={"enum": ["xy"]},
            point={"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
        ),
    ),
    "something_new": obj(
        n={"type": "integer", "minimum": 3, "maximum": 5},
        flags={"type": "array", "items": {"type": "boolean"}, "minItems": 2},
        mode={"enum": ["fast", "slow"]},
    ),
}
FRAMES = "Task: Pick up the bottle\nFrame timestamps (s): 0.000, 1.000, 2.500, 4.000"


@pytest.fixture
def fake(tmp_path):
    with run_fake(tmp_path) as server:
        yield server


def answer_of(status_body) -> dict:
    status, body = status_body
    assert status == 200, body
    return json.loads(body["choices"][0]["message"]["content"])


def test_answers_are_valid_for_each_kinds_schema_and_deterministic(fake):
    base, _ = fake
    for kind, schema in SCHEMAS.items():
        body = chat(kind, schema, FRAMES, [jpeg_url()])
        first = answer_of(post(base, body))
        jsonschema.validate(first, schema)
        assert answer_of(post(base, body)) == first, f"{kind}: same request, same answer"


def test_plausible_answers_follow_the_shown_frames(fake):
    base, _ = fake
    described = answer_of(post(base, chat("describe", SCHEMAS["describe"], FRAMES, [jpeg_url()])))
    assert [n["time"] for n in described["narration"]] == [0.0, 1.0, 2.5, 4.0]
    spans = answer_of(post(base, chat("segment", SCHEMAS["segment"], FRAMES)))["subtasks"]
    assert 2 <= len(spans) <= 3  # the schema's maxItems is respected
    assert spans[0]["start"] == 0.0 and spans[-1]["end"] == 4.0
    assert all(a["end"] == b["start"] for a, b in zip(spans, spans[1:], strict=False))
    rephrased = answer_of(post(base, chat("task_rephrasings", SCHEMAS["task_rephrasings"], FRAMES)))
    assert len(set(rephrased["rephrasings"])) == 10
    assert all("pick up the bottle" in r for r in rephrased["rephrasings"])


def test_vqa_coordinates_lie_inside_the_image_or_the_normalized_grid(fake):
    base, _ = fake
    for seed in range(5):
        text = f"Question {seed}"
        got = answer_of(post(base, chat("vqa_bbox", SCHEMAS["vqa_bbox"], text, [jpeg_url()])))
        for det in got["answer"]["detections"]:
            x1, y1, x2, y2 = det["bbox"]
            assert 0 <= x1 < x2 < 160 and 0 <= y1 < y2 < 120
        text += "\nCoordinate system: normalized 0-1000"
        body = chat("vqa_keypoint", SCHEMAS["vqa_keypoint"], text, [jpeg_url()])
        got = answer_of(post(base, body))
        x, y = got["answer"]["point"]
        assert 0 <= x < 1000 and 0 <= y < 1000


def test_wrong_model_is_404_with_an_openai_error(fake):
    base, _ = fake
    status, body = post(base, chat("describe", SCHEMAS["describe"], "hi", model="other/model"))
    assert status == 404
    assert "other/model" in body["error"]["message"] and body["error"]["code"] == 404
    with urllib.request.urlopen(base + "/models", timeout=5) as r:
        assert [m["id"] for m in json.loads(r.read())["data"]] == [MODEL]


def test_malformed_requests_are_400(fake):
    base, _ = fake
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    png_as_jpeg = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    not_base64 = "data:image/jpeg;base64,@@@"
    https_url = "https://example.com/frame.jpg"
    for url in (png_as_jpeg, not_base64, https_url):
        status, body = post(base, chat("describe", SCHEMAS["describe"], "hi", [url]))
        assert status == 400, url
        assert "content[0]" in body["error"]["message"]
    bad_role = chat("describe", SCHEMAS["describe"], "hi")
    bad_role["messages"][0]["role"] = "robot"
    assert post(base, bad_role)[0] == 400
    bad_part = chat("describe", SCHEMAS["describe"], "hi")
    bad_part["messages"][0]["content"].append({"type": "video", "video": "x"})
    assert post(base, bad_part)[0] == 400


def test_truncated_jpegs_and_invalid_schemas_are_400_every_time(fake):
    base, _ = fake
    whole = base64.b64decode(jpeg_url().removeprefix("data:image/jpeg;base64,"))
    truncated = "data:image/jpeg;base64," + base64.b64encode(whole[: len(whole) // 2]).decode()
    status, body = post(base, chat("describe", SCHEMAS["describe"], "hi", [truncated]))
    assert status == 400 and "content[0]" in body["error"]["message"]
    bad_schema = {"type": "object", "properties": {"n": {"type": "no-such-type"}}}
    for _ in range(2):  # the server remembers schemas it has checked: the second time too
        status, body = post(base, chat("describe", bad_schema, "hi"))
        assert status == 400 and "schema is invalid" in body["error"]["message"]
    assert answer_of(post(base, chat("describe", SCHEMAS["describe"], "hi", [jpeg_url()])))


def test_faults_come_by_arrival_order_and_cycle(tmp_path):
    with run_fake(tmp_path, "--fault-rate", "0.5", "--fault-cycle", "500,nonjson,schema") as (
        base,
        log,
    ):
        schema = SCHEMAS["something_new"]
        outcomes = []
        for i in range(6):
            status, body = post(base, chat("something_new", schema, f"call {i}"))
            if status != 200:
                outcomes.append(status)
                continue
            content = body["choices"][0]["message"]["content"]
            try:
                jsonschema.validate(json.loads(content), schema)
                outcomes.append("ok")
            except json.JSONDecodeError:
                outcomes.append("nonjson")
            except jsonschema.ValidationError:
                outcomes.append("schema")
        assert outcomes == ["ok", 500, "ok", "nonjson", "ok", "schema"]
        assert [e["fault"] for e in read_log(log)] == [
            None, "500", None, "nonjson", None, "schema"
        ]  # fmt: skip


def test_timeout_fault_holds_the_connection_until_the_client_leaves(tmp_path):
    with run_fake(tmp_path, "--fault-rate", "1", "--fault-cycle", "timeout") as (base, log):
        t0 = time.monotonic()
        with pytest.raises((TimeoutError, OSError)):
            post(base, chat("something_new", SCHEMAS["something_new"], "x"), timeout=0.5)
        assert time.monotonic() - t0 < 5
        # The server notices the hang-up and logs the call as a fault without a status.
        assert wait_until(lambda: len(read_log(log)) == 1, 5)
        assert read_log(log)[0]["fault"] == "timeout"


def test_max_concurrency_queues_calls_like_a_saturated_gpu(tmp_path):
    with run_fake(tmp_path, "--latency-ms", "200", "--max-concurrency", "2") as (base, log):
        body = chat("something_new", SCHEMAS["something_new"], "x")
        threads = [threading.Thread(target=post, args=(base, body)) for _ in range(6)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert time.monotonic() - t0 >= 0.55  # 6 calls, 2 at a time, 0.2 s each
        entries = read_log(log)
        assert len(entries) == 6
        assert max_overlap([(e["start"], e["end"]) for e in entries]) == 2
        assert all(e["start"] >= e["arrival"] and e["end"] >= e["start"] for e in entries)


# -- as strict as vLLM serving a Qwen-VL model ------------------------------------------


def _usage(body: dict) -> dict:
    return body["usage"]


def test_prompt_tokens_follow_the_qwen_vl_image_rule(tmp_path):
    text = "x" * 400  # 100 text tokens
    # Qwen3-VL: 640x480 -> 20 x 15 squares of 32 px; Qwen2.5-VL: 644x476 -> 23 x 17 of 28 px.
    # Each image adds its 2 vision markers; the message adds 4 tokens of chat template.
    for model, image in (("Qwen/Qwen3-VL-8B-Instruct", 302), ("Qwen/Qwen2.5-VL-7B-Instruct", 393)):
        with run_fake(tmp_path, "--model", model, name=model[5:12]) as (base, log):
            body = chat("describe", SCHEMAS["describe"], text, [jpeg_url((640, 480))], model=model)
            status, answer = post(base, body)
            assert status == 200 and _usage(answer)["prompt_tokens"] == image + 100 + 4
            entry = read_log(log)[0]
            assert entry["image_sizes"] == [[640, 480]] and entry["image_tokens"] == image + 4


def test_prompt_over_max_model_len_is_refused_with_vllms_400(tmp_path):
    with run_fake(tmp_path, "--max-model-len", "700") as (base, log):
        ok = chat("vqa_keypoint", SCHEMAS["vqa_keypoint"], "count", [jpeg_url((640, 480))])
        assert post(base, dict(ok, max_completion_tokens=300))[0] == 200  # 307 + 300 <= 700
        status, body = post(base, dict(ok, max_completion_tokens=500))
    assert status == 400
    error = body["error"]
    assert (error["type"], error["param"]) == ("BadRequestError", "input_tokens")
    assert error["code"] == 400
    assert error["message"].startswith(
        "This model's maximum context length is 700 tokens. However, you requested 500 output "
        "tokens and your prompt contains at least 201 input tokens"
    )
    assert [e["status"] for e in read_log(log)] == [200, 400]


def test_more_images_than_the_limit_are_refused(tmp_path):
    with run_fake(tmp_path, "--limit-mm-per-prompt", '{"image": 2}') as (base, _):
        body = chat("describe", SCHEMAS["describe"], "three frames", [jpeg_url()] * 3)
        status, answer = post(base, body)
    assert status == 400 and answer["error"]["param"] == "image"
    assert answer["error"]["message"].startswith("At most 2 image(s) may be provided in one prompt")


def test_answers_are_cut_at_max_completion_tokens(fake):
    base, log = fake
    body = chat("segment", SCHEMAS["segment"], "Frame timestamps (s): 0.0, 9.0")
    status, answer = post(base, dict(body, max_completion_tokens=5))
    choice = answer["choices"][0]
    assert status == 200 and choice["finish_reason"] == "length"
    assert len(choice["message"]["content"]) <= 20 and _usage(answer)["completion_tokens"] == 5
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice["message"]["content"])
    assert read_log(log)[-1]["finish_reason"] == "length"


def test_the_model_thinks_first_unless_thinking_is_off(tmp_path):
    body = chat("vqa_keypoint", SCHEMAS["vqa_keypoint"], "where?", [jpeg_url()])
    thinking = dict(body, chat_template_kwargs={"enable_thinking": True})
    with run_fake(tmp_path) as (base, _):
        status, answer = post(base, thinking)
        content = answer["choices"][0]["message"]["content"]
        assert content.startswith("<think>") and "</think>" in content
        jsonschema.validate(json.loads(content.split("</think>")[1]), SCHEMAS["vqa_keypoint"])
        assert _usage(answer)["completion_tokens"] > 150
        _, quiet = post(base, body)  # enable_thinking false: the JSON alone
        assert json.loads(quiet["choices"][0]["message"]["content"])
    with run_fake(tmp_path, "--reasoning-parser", "qwen3", name="parsed") as (base, _):
        message = post(base, thinking)[1]["choices"][0]["message"]
        assert message["reasoning_content"] and json.loads(message["content"])


def test_whitespace_fault_runs_to_the_budget_unless_whitespace_is_disabled(tmp_path):
    body = chat("segment", SCHEMAS["segment"], "Frame timestamps (s): 0.0, 9.0")
    body["max_completion_tokens"] = 200
    faults = ("--fault-rate", "1", "--fault-cycle", "whitespace")
    with run_fake(tmp_path, *faults) as (base, _):
        choice = post(base, body)[1]["choices"][0]
        assert choice["finish_reason"] == "length"
        assert choice["message"]["content"].strip().endswith(",")  # cut mid-object
    compact = (
        "--structured-outputs-config",
        '{"backend": "xgrammar", "disable_any_whitespace": true}',
    )
    with run_fake(tmp_path, *faults, *compact, name="compact") as (base, _):
        choice = post(base, body)[1]["choices"][0]
        assert choice["finish_reason"] == "stop"
        jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMAS["segment"])


def test_request_log_counts_what_prefix_caching_would_not_recompute(tmp_path):
    frames = [jpeg_url((640, 480)), jpeg_url((320, 240))]  # 302 and 82 tokens
    describe = chat("describe", SCHEMAS["describe"], "Describe.", frames)
    with run_fake(tmp_path, "--enable-prompt-tokens-details") as (base, log):
        first = post(base, describe)[1]
        # The same frames first, other words after them: the frames are cached.
        other = post(base, chat("derive_task", SCHEMAS["describe"], "The task?", frames))[1]
        # The describe conversation continued: all of the describe request is cached.
        follow = dict(describe, messages=describe["messages"] + [
            {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
            {"role": "user", "content": "Now segment."},
        ])  # fmt: skip
        post(base, follow)
        # The same frames in another order share nothing.
        post(base, chat("describe", SCHEMAS["describe"], "Describe.", frames[::-1]))
    entries = read_log(log)
    assert [e["cached_tokens"] for e in entries] == [
        0,
        (302 + 4) + 82,
        first["usage"]["prompt_tokens"],
        0,
    ]
    assert other["usage"]["prompt_tokens_details"] == {"cached_tokens": 306 + 82}

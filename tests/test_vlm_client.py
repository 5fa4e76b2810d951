"""VlmClient against real fake-server processes: answers, re-prompts, retries, in-flight bounds."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import httpx2
import openai
import pytest
from test_fake_server import MODEL, SCHEMAS, jpeg_url, max_overlap, read_log, run_fake

from episcribe.errors import ServerError
from episcribe.vlm.client import InvalidAnswer, VlmClient, extract_json, user_message
from episcribe.vlm.slots import SlotPool

SCHEMA = SCHEMAS["something_new"]
FAST = {"timeout_s": 1.0, "backoff_s": 0.01}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def calls(client: VlmClient, n: int, kind: str = "something_new", schema=SCHEMA):
    return await asyncio.gather(
        *(client.complete_json(kind, [user_message(f"call {i}")], schema) for i in range(n))
    )


def test_schema_constrained_answers_are_accepted_and_metered(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    with run_fake(tmp_path) as (base, _):

        async def go():
            async with VlmClient([base], MODEL, "sk-secret", metrics_path=metrics) as client:
                for kind in ("describe", "segment", "vqa_bbox"):
                    text = "Frame timestamps (s): 0.000, 1.000"
                    got = await client.complete_json(
                        kind, [user_message(text, [jpeg_url()])], SCHEMAS[kind]
                    )
                    assert got is not None, kind
                return client.stats

        stats = run(go())
    assert (stats.calls, stats.ok, stats.failures, stats.retries) == (3, 3, 0, 0)
    # A 160x120 frame is scaled up to the Qwen3-VL minimum area: 320x224, 10 x 7 tokens + 2.
    assert stats.prompt_tokens > 3 * 72 and stats.completion_tokens > 0
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [m["kind"] for m in lines] == ["describe", "segment", "vqa_bbox"]
    assert all(m["outcome"] == "ok" and m["end"] >= m["start"] for m in lines)
    assert {"latency_s", "prompt_tokens", "completion_tokens", "retries", "reprompted"} <= set(
        lines[0]
    )
    assert "sk-secret" not in metrics.read_text()


def test_invalid_answer_gets_one_reprompt_then_none(tmp_path, caplog):
    # Every call is a fault: non-JSON first, then schema-violating JSON.
    args = ("--fault-rate", "1", "--fault-cycle", "nonjson,schema")
    with run_fake(tmp_path, *args) as (base, log):

        async def go():
            async with VlmClient([base], MODEL, "EMPTY", metrics_path=tmp_path / "m.jsonl") as c:
                return await c.complete_json("something_new", [user_message("x")], SCHEMA), c.stats

        result, stats = run(go())
        assert result is None
        assert (stats.calls, stats.reprompts, stats.failures, stats.ok) == (1, 1, 1, 0)
        assert [e["fault"] for e in read_log(log)] == ["nonjson", "schema"]  # exactly 2 requests
    assert "something_new" in caplog.text and "WARNING" in caplog.text
    record = json.loads((tmp_path / "m.jsonl").read_text())
    assert record["outcome"] == "invalid" and record["reprompted"] is True


def test_reprompt_recovers_a_bad_answer(tmp_path):
    with run_fake(tmp_path, "--fault-rate", "0.5", "--fault-cycle", "nonjson") as (base, log):

        async def go():
            async with VlmClient([base], MODEL, "EMPTY") as c:
                return await calls(c, 1) + await calls(c, 1), c.stats

        results, stats = run(go())
        assert all(r is not None for r in results)
        assert (stats.ok, stats.reprompts, stats.failures) == (2, 1, 0)
        assert [e["fault"] for e in read_log(log)] == [None, "nonjson", None]


def test_500_429_and_timeouts_are_retried_then_succeed(tmp_path):
    # Arrival 1 ok; 2, 3, 4 faulty (500, 429, held connection); 5 ok.
    args = ("--fault-rate", "0.75", "--fault-cycle", "500,429,timeout")
    with run_fake(tmp_path, *args) as (base, log):

        async def go():
            async with VlmClient([base], MODEL, "EMPTY", max_retries=4, **FAST) as c:
                return await calls(c, 1) + await calls(c, 1), c.stats

        results, stats = run(go())
        assert all(r is not None for r in results)
        assert (stats.ok, stats.retries, stats.failures) == (2, 3, 0)
        assert [e["fault"] for e in read_log(log)] == [None, "500", "429", "timeout", None]


def test_retries_are_bounded_then_the_call_is_skipped(tmp_path):
    with run_fake(tmp_path, "--fault-rate", "1", "--fault-cycle", "500") as (base, log):

        async def go():
            async with VlmClient([base], MODEL, "EMPTY", max_retries=2, **FAST) as c:
                return await calls(c, 1), c.stats

        results, stats = run(go())
        assert results == [None] and (stats.retries, stats.failures) == (2, 1)
        assert len(read_log(log)) == 3


def test_wrong_model_raises_server_error_naming_model_and_endpoint(tmp_path):
    with run_fake(tmp_path) as (base, _):

        async def go():
            async with VlmClient([base], "no/such-model", "EMPTY") as c:
                await calls(c, 1)

        with pytest.raises(ServerError, match="no/such-model") as err:
            run(go())
        assert base in str(err.value)


def test_in_flight_requests_never_exceed_the_concurrency(tmp_path):
    with run_fake(tmp_path, "--latency-ms", "50") as (base, log):

        async def go():
            async with VlmClient([base], MODEL, "EMPTY", concurrency=4) as c:
                return await calls(c, 40)

        assert all(r is not None for r in run(go()))
        overlap = max_overlap([(e["arrival"], e["end"]) for e in read_log(log)])
        assert 3 <= overlap <= 4


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from episcribe.vlm.client import VlmClient, user_message
    from episcribe.vlm.slots import SlotPool
    base, model, run_dir = sys.argv[1:4]
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    async def main():
        async with VlmClient([base], model, "EMPTY", concurrency=8,
                             slots=SlotPool(run_dir, 3)) as c:
            got = await asyncio.gather(*(c.complete_json("k", [user_message(str(i))], schema)
                                         for i in range(24)))
        assert all(g is not None for g in got)
    asyncio.run(main())
    """
)


def test_slot_pool_bounds_in_flight_across_processes(tmp_path):
    with run_fake(tmp_path, "--latency-ms", "40") as (base, log):
        children = [
            subprocess.Popen([sys.executable, "-c", CHILD, base, MODEL, str(tmp_path / "run")])
            for _ in range(2)
        ]
        for child in children:
            assert child.wait(timeout=60) == 0
        entries = read_log(log)
    assert len(entries) == 48
    assert max_overlap([(e["arrival"], e["end"]) for e in entries]) == 3


def test_slot_pool_hands_out_distinct_slots_and_reuses_released_ones(tmp_path):
    pool = SlotPool(tmp_path, 2)
    a, b = pool.try_acquire(), pool.try_acquire()
    assert {a, b} == {0, 1} and pool.try_acquire() is None
    pool.release(a)
    assert pool.try_acquire() == a
    pool.close()


def test_slot_pool_many_waiters_stay_bounded_and_one_poller_polls(tmp_path):
    pool = SlotPool(tmp_path, 3)
    polls = 0
    try_acquire = pool.try_acquire

    def counted():
        nonlocal polls
        polls += 1
        return try_acquire()

    pool.try_acquire = counted
    held = peak = 0

    async def one() -> None:
        nonlocal held, peak
        async with pool.slot():
            held += 1
            peak = max(peak, held)
            await asyncio.sleep(0.001)
            held -= 1

    async def go() -> None:
        blocker = SlotPool(tmp_path, 3)  # another "process" holds every slot for 0.2 s
        taken = [blocker.try_acquire() for _ in range(3)]
        tasks = [asyncio.ensure_future(one()) for _ in range(300)]
        await asyncio.sleep(0.2)
        assert held == 0
        # 300 waiters, ~40 polling rounds: one poller polls, not every waiter.
        assert polls < 300 + 100, polls
        for i in taken:
            blocker.release(i)
        await asyncio.gather(*tasks)
        blocker.close()

    run(go())
    assert peak == 3 and held == 0
    pool.close()


def test_slot_pool_waiters_are_served_in_order_and_cancelled_ones_skipped(tmp_path):
    pool = SlotPool(tmp_path, 1)
    order: list[str] = []

    async def one(name: str) -> None:
        async with pool.slot():
            order.append(name)
            await asyncio.sleep(0.01)

    async def go() -> None:
        first = pool.try_acquire()
        tasks = {n: asyncio.ensure_future(one(n)) for n in "abcd"}
        await asyncio.sleep(0.02)
        tasks["b"].cancel()
        pool.release(first)
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        assert pool.try_acquire() is not None  # nothing leaked

    run(go())
    assert order == ["a", "c", "d"]
    pool.close()


def test_requests_rotate_over_replicas(tmp_path):
    with (
        run_fake(tmp_path, name="a") as (base_a, log_a),
        run_fake(tmp_path, name="b") as (
            base_b,
            log_b,
        ),
    ):

        async def go():
            async with VlmClient([base_a, base_b], MODEL, "EMPTY", concurrency=1) as c:
                return await calls(c, 10)

        run(go())
        assert (len(read_log(log_a)), len(read_log(log_b))) == (5, 5)


@pytest.mark.parametrize(
    "text",
    [
        '{"n": 1}',
        '<think>maybe {"n": 0}?</think>\n{"n": 1}',
        'reasoning...</think>{"n": 1}',
        'Here you go:\n```json\n{"n": 1}\n```\nDone.',
        'The answer is {"n": 1} as requested.',
    ],
)
def test_extract_json_tolerates_thinking_and_fences(text):
    assert extract_json(text) == {"n": 1}


@pytest.mark.parametrize("text", ["", "no json here", "[1, 2]", "```json\n[1]\n```"])
def test_extract_json_rejects_non_objects(text):
    with pytest.raises(InvalidAnswer):
        extract_json(text)


@pytest.mark.parametrize(
    "options, sdk_options",
    [
        ({}, {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}),
        (
            # vlm.chat_template_kwargs and vlm.reasoning_effort, sent as given; the
            # enable_thinking setting wins over the mapping's own key
            {
                "chat_template_kwargs": {"enable_thinking": True, "custom": [1, "x"]},
                "reasoning_effort": "low",
            },
            {
                "reasoning_effort": "low",
                "extra_body": {
                    "chat_template_kwargs": {"enable_thinking": False, "custom": [1, "x"]}
                },
            },
        ),
    ],
)
def test_requests_are_byte_for_byte_what_the_sdk_create_sends(options, sdk_options):
    """The client posts its own JSON body: it must be exactly what chat.completions.create sends."""
    answer = {"n": 4, "flags": [True, False], "mode": "fast"}
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        message = {"role": "assistant", "content": json.dumps(answer)}
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
        return httpx2.Response(200, json=body)

    messages = [user_message('Café: "quoted" \u00e9\n{braces}', [jpeg_url(), jpeg_url((8, 8))])]
    fmt = {"type": "json_schema", "json_schema": {"name": "k", "schema": SCHEMA, "strict": True}}

    async def go():
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
        sdk = openai.AsyncOpenAI(base_url="http://x/v1", api_key="EMPTY", http_client=http)
        await sdk.chat.completions.create(
            model=MODEL,
            messages=messages,
            response_format=fmt,
            max_completion_tokens=77,
            temperature=0.3,
            timeout=9.0,
            **sdk_options,
        )
        budgets = {"k": 77, "other": 5}
        async with VlmClient(
            ["http://x/v1"],
            MODEL,
            "EMPTY",
            max_completion_tokens=budgets,
            temperature=0.3,
            http_client=http,
            **options,
        ) as client:
            got = await client.complete_json("k", messages, SCHEMA)
        return got, client.stats

    got, stats = run(go())
    assert got == answer and (stats.prompt_tokens, stats.completion_tokens) == (7, 3)
    by_sdk, ours = seen
    assert (ours.method, ours.url) == (by_sdk.method, by_sdk.url)
    assert ours.content == by_sdk.content
    for header in ("content-type", "authorization", "accept"):
        assert ours.headers[header] == by_sdk.headers[header]


# -- a real model's limits, through the strict fake -------------------------------------


def test_an_answer_cut_at_its_budget_is_counted_truncated_and_not_reprompted(tmp_path, caplog):
    metrics = tmp_path / "m.jsonl"
    with run_fake(tmp_path) as (base, log):

        async def go():
            budgets = {"something_new": 3, "vqa": 256}
            async with VlmClient([base], MODEL, "EMPTY", max_completion_tokens=budgets,
                                 metrics_path=metrics) as client:  # fmt: skip
                cut = await client.complete_json("something_new", [user_message("x")], SCHEMA)
                whole = await client.complete_json("vqa_keypoint", [user_message("x")],
                                                   SCHEMAS["vqa_keypoint"])  # fmt: skip
                return cut, whole, client.stats

        cut, whole, stats = run(go())
        sent = read_log(log)
    assert cut is None and whole is not None
    assert (stats.truncated, stats.reprompts, stats.failures) == (1, 0, 1)
    assert [e["kind"] for e in sent] == ["something_new", "vqa_keypoint"]  # no re-prompt
    first = json.loads(metrics.read_text().splitlines()[0])
    assert (first["outcome"], first["finish_reason"], first["truncated"]) == (
        "truncated",
        "length",
        True,
    )
    assert "vlm.max_completion_tokens.something_new" in caplog.text


def test_thinking_is_off_by_default_and_a_thinking_answer_still_parses(tmp_path):
    for args in ((), ("--reasoning-parser", "qwen3")):
        with run_fake(tmp_path, *args, name=f"fake{len(args)}") as (base, log):

            async def go(**options):
                async with VlmClient([base], MODEL, "EMPTY", **options) as client:
                    got = await client.complete_json("something_new", [user_message("x")], SCHEMA)
                    return got, client.stats

            quiet, quiet_stats = run(go())
            thought, thought_stats = run(go(enable_thinking=True, max_completion_tokens=2048))
            short, short_stats = run(go(enable_thinking=True, max_completion_tokens=64))
        assert quiet is not None and thought is not None and short is None
        assert quiet_stats.completion_tokens < 64 < thought_stats.completion_tokens
        assert short_stats.truncated == 1


def test_a_client_for_a_run_asks_as_the_vlm_settings_say(tmp_path):
    """What the pipeline and the evaluation ask with: the settings of vlm.*, and room to
    think on top of each budget (without it, this 64-token budget cuts the answer above)."""
    from episcribe.config import resolve

    settings = {"model_id": MODEL, "temperature": 0.7, "reasoning_effort": "low"}
    settings |= {"enable_thinking": True, "thinking_tokens": 2000}
    settings |= {"chat_template_kwargs": {"house_style": "terse"}}
    vlm = resolve({"dataset": {"root": "unused"}, "vlm": settings})["vlm"]
    with run_fake(tmp_path) as (base, log):

        async def go():
            async with VlmClient.for_run([base], vlm, {"something_new": 64}) as client:
                got = await client.complete_json("something_new", [user_message("x")], SCHEMA)
                return got, client.stats

        answer, stats = run(go())
        (request,) = read_log(log)
    assert answer is not None and stats.truncated == 0 and stats.completion_tokens > 64
    assert request["sampling"] == {
        "temperature": 0.7,
        "max_completion_tokens": 64 + 2000,
        "chat_template_kwargs": {"house_style": "terse", "enable_thinking": True},
        "reasoning_effort": "low",
    }


def test_a_prompt_over_the_context_length_fails_at_once_naming_the_limit(tmp_path, caplog):
    image = jpeg_url((640, 480))
    with run_fake(tmp_path, "--max-model-len", "400") as (base, log):

        async def go():
            async with VlmClient([base], MODEL, "EMPTY", **FAST) as client:
                messages = [user_message("x", [image])]
                return await client.complete_json("something_new", messages, SCHEMA), client.stats

        result, stats = run(go())
        assert result is None and stats.retries == 0 and len(read_log(log)) == 1
    assert "maximum context length is 400 tokens" in caplog.text


def test_cached_prompt_tokens_are_metered_when_the_server_reports_them(tmp_path):
    frames = [jpeg_url((640, 480))]
    with run_fake(tmp_path, "--enable-prompt-tokens-details") as (base, _):

        async def go():
            async with VlmClient([base], MODEL, "EMPTY") as client:
                for text in ("one", "two"):
                    messages = [user_message(text, frames)]
                    await client.complete_json("something_new", messages, SCHEMA)
                return client.stats

        stats = run(go())
    assert stats.cached_tokens == 302 + 4  # the second request's image, after the first's


def test_whitespace_runaway_is_cut_at_the_budget_and_counted_truncated(tmp_path):
    # A model padding constrained JSON with whitespace spends the whole budget; with the
    # serve command's disable_any_whitespace the same fault cannot happen.
    faults = ("--fault-rate", "1", "--fault-cycle", "whitespace")
    compact = '{"backend": "xgrammar", "disable_any_whitespace": true}'
    outcomes = []
    for name, extra in (("loose", ()), ("compact", ("--structured-outputs-config", compact))):
        with run_fake(tmp_path, *faults, *extra, name=name) as (base, log):

            async def go():
                async with VlmClient([base], MODEL, "EMPTY", max_completion_tokens=100) as c:
                    got = await c.complete_json("something_new", [user_message("x")], SCHEMA)
                    return got, c.stats

            got, stats = run(go())
            outcomes.append((got is not None, stats.truncated, len(read_log(log))))
    assert outcomes == [(False, 1, 1), (True, 0, 1)]

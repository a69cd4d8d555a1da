"""The upstream simulator over real HTTP on a loopback port: OpenAI wire format, deterministic
answers, faults, pacing, stats and the control API."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from ai_service.simulator import FaultRule, Simulator, SimulatorConfig, plan_reply
from tests.conftest import until

CHAT = "/v1/chat/completions"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "extra": {"type": "object"},
            },
        },
    },
}


def chat(content: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "sim-small", "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(fault_seed=7)) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=5.0) as http:
        yield http


async def stream_events(client: httpx.AsyncClient, body: dict[str, Any]) -> list[str]:
    """The `data:` payloads of a stream, in order."""
    async with client.stream("POST", CHAT, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]


def content_of(events: list[str]) -> str:
    chunks = [orjson.loads(e) for e in events if e != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# -- answers ---------------------------------------------------------------------------------


async def test_unary_answer_and_usage_match_plan_reply(client: httpx.AsyncClient) -> None:
    body = chat("hello  there, simulator")
    plan = plan_reply(body)

    response = await client.post(CHAT, json=body)

    assert response.status_code == 200
    completion = response.json()
    assert completion["id"].startswith("chatcmpl-")
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "sim-small"
    assert isinstance(completion["created"], int)
    assert completion["system_fingerprint"]
    [choice] = completion["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == plan.text == "You said: hello  there, simulator"
    assert choice["message"]["refusal"] is None
    usage = completion["usage"]
    assert usage["prompt_tokens"] == plan.prompt_tokens == 3 + 3
    assert usage["completion_tokens"] == plan.completion_tokens == 5
    assert usage["total_tokens"] == plan.total_tokens
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


async def test_stream_deltas_concatenate_to_unary_text_then_usage_then_done(
    client: httpx.AsyncClient,
) -> None:
    body = chat("/tokens 40 a long answer", stream_options={"include_usage": True})
    unary = (await client.post(CHAT, json=body)).json()

    events = await stream_events(client, body)

    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["choices"][0]["delta"]["content"] == ""
    assert len(chunks) == 1 + 40 + 2  # role, one per word, finish, usage
    assert content_of(events) == unary["choices"][0]["message"]["content"]
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0]["delta"] == {}
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == []
    assert usage["usage"] == unary["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_stream_without_include_usage_has_no_usage_chunk(client: httpx.AsyncClient) -> None:
    events = await stream_events(client, chat("short"))
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert content_of(events) == "You said: short"


def test_tokens_command_is_deterministic_and_exact() -> None:
    first = plan_reply(chat("/tokens 200 some seed text"))
    assert first.text is not None and len(first.text.split()) == 200
    assert first.completion_tokens == 200
    assert plan_reply(chat("/tokens 200 some seed text")).text == first.text
    assert plan_reply(chat("/tokens 200 other seed text")).text != first.text


def test_prompt_tokens_count_words_messages_tool_calls_and_tools() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "two words"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}],
        },
        {"role": "tool", "content": "sunny and warm"},
    ]
    plan = plan_reply({"model": "m", "messages": messages})
    assert plan.prompt_tokens == 4 * 3 + 2 + 2 + 2 + 3
    assert plan.text == "Tool result received: sunny and warm"
    with_tool = plan_reply({"model": "m", "messages": messages[:2], "tools": [WEATHER_TOOL]})
    assert with_tool.prompt_tokens == 2 * 3 + 4 + len(json.dumps(WEATHER_TOOL).split())


async def test_tool_call_unary_and_streamed_arguments_reassemble(
    client: httpx.AsyncClient,
) -> None:
    body = chat("what is the weather in city: Paris?", tools=[WEATHER_TOOL])

    unary = (await client.post(CHAT, json=body)).json()
    events = await stream_events(client, body)

    [choice] = unary["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    arguments = call["function"]["arguments"]
    assert orjson.loads(arguments) == {"city": "Paris", "days": 1, "metric": True, "extra": None}
    assert call["id"] == plan_reply(body).tool_calls[0].id

    chunks = [orjson.loads(e) for e in events[:-1]]
    head = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert head["id"] == call["id"] and head["function"] == {"name": "get_weather", "arguments": ""}
    pieces = [
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1]
    ]
    assert len(pieces) > 1
    assert "".join(pieces) == arguments
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_choice_names_the_function_and_none_answers_text(
    client: httpx.AsyncClient,
) -> None:
    other = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    named = chat("hi", tools=[WEATHER_TOOL, other])
    named["tool_choice"] = {"type": "function", "function": {"name": "lookup"}}
    call = (await client.post(CHAT, json=named)).json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "lookup", "arguments": "{}"}

    plain = (await client.post(CHAT, json={**named, "tool_choice": "none"})).json()
    assert plain["choices"][0]["message"]["content"] == "You said: hi"


async def test_max_tokens_truncates_with_finish_reason_length(client: httpx.AsyncClient) -> None:
    body = chat("one two three four five", max_tokens=4)
    completion = (await client.post(CHAT, json=body)).json()
    assert completion["choices"][0]["message"]["content"] == "You said: one two"
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"]["completion_tokens"] == 4
    assert content_of(await stream_events(client, body)) == "You said: one two"


async def test_stop_sequences_cut_before_the_first_match(client: httpx.AsyncClient) -> None:
    body = chat("alpha beta gamma delta", stop=["delta", "gamma"])
    completion = (await client.post(CHAT, json=body)).json()
    assert completion["choices"][0]["message"]["content"] == "You said: alpha beta "
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"]["completion_tokens"] == 4
    assert content_of(await stream_events(client, body)) == "You said: alpha beta "


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"not json", None),
        (orjson.dumps({"messages": [{"role": "user", "content": "x"}]}), "model"),
        (orjson.dumps({"model": "m"}), "messages"),
        (orjson.dumps({"model": "m", "messages": []}), "messages"),
        (orjson.dumps({"model": "m", "messages": [{"role": "robot", "content": "x"}]}), None),
        (orjson.dumps(chat(temperature=2.5)), "temperature"),
        (orjson.dumps(chat(max_tokens=0)), "max_tokens"),
        (orjson.dumps(chat(tool_choice="none")), "tool_choice"),
        (orjson.dumps({**chat(max_tokens=5), "model": "gpt-5-mini"}), "max_tokens"),
    ],
)
async def test_bad_input_gets_400_in_openai_error_shape(
    client: httpx.AsyncClient, content: bytes, param: str | None
) -> None:
    response = await client.post(CHAT, content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param
    if b"robot" in content:
        assert error["param"] == "messages[0].role" and error["code"] == "invalid_value"


async def test_api_key_is_required_when_configured(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.config.api_key = "sk-sim"
    missing = await client.post(CHAT, json=chat())
    wrong = await client.post(CHAT, json=chat(), headers={"Authorization": "Bearer nope"})
    right = await client.post(CHAT, json=chat(), headers={"Authorization": "Bearer sk-sim"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert right.status_code == 200


async def test_unknown_model_is_404_model_not_found(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.config.unknown_models = frozenset({"gpt-nope"})
    response = await client.post(CHAT, json={**chat(), "model": "gpt-nope"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert (await client.post(CHAT, json={**chat(), "model": "anything-else"})).status_code == 200


# -- latency and pacing ----------------------------------------------------------------------


async def test_latency_and_tokens_per_second_pace_the_stream(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.config.latency_ms = 100
    sim.config.tokens_per_second = 10
    started = time.monotonic()
    async with client.stream("POST", CHAT, json=chat("/tokens 11 x", stream=True)) as response:
        lines = response.aiter_lines()
        first = await anext(lines)
        first_at = time.monotonic() - started
        rest = [line async for line in lines]
    total = time.monotonic() - started
    assert first.startswith("data: ")
    assert first_at >= 0.09  # the latency comes first
    # Then the first token, and the other ten paced 100 ms apart after it (not held back
    # until the whole stream is ready).
    assert total - first_at >= 10 * 0.1 * 0.9
    assert rest[-2] == "data: [DONE]"


# -- faults ----------------------------------------------------------------------------------


async def test_status_fault_with_retry_after_fires_times_then_stops(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.add_fault(FaultRule("status", path=CHAT, status=429, retry_after=1.5, times=2))
    first = await client.post(CHAT, json=chat())
    second = await client.post(CHAT, json=chat())
    third = await client.post(CHAT, json=chat())
    assert first.status_code == second.status_code == 429
    assert first.headers["retry-after"] == "2"
    assert first.headers["retry-after-ms"] == "1500"
    assert first.json()["error"]["code"] == "rate_limit_exceeded"
    assert third.status_code == 200


async def test_fault_matches_by_model(sim: Simulator, client: httpx.AsyncClient) -> None:
    sim.add_fault(FaultRule("status", model="sim-large", status=503))
    assert (await client.post(CHAT, json=chat())).status_code == 200
    failed = await client.post(CHAT, json={**chat(), "model": "sim-large"})
    assert failed.status_code == 503
    assert failed.json()["error"]["type"] == "server_error"


async def test_reset_fault_drops_the_connection(sim: Simulator, client: httpx.AsyncClient) -> None:
    sim.add_fault(FaultRule("reset", times=1))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await client.post(CHAT, json=chat())
    assert (await client.post(CHAT, json=chat())).status_code == 200


async def test_stall_fault_sends_nothing_until_the_client_times_out(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.add_fault(FaultRule("stall", times=1))
    with pytest.raises(httpx.ReadTimeout):
        await client.post(CHAT, json=chat(), timeout=0.3)
    assert (await client.post(CHAT, json=chat())).status_code == 200


async def test_cut_fault_ends_the_stream_after_k_chunks_without_done(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.add_fault(FaultRule("cut", after_chunks=3, times=1))
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", CHAT, json=chat("/tokens 30 x", stream=True)) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    received.append(line[6:])
    assert len(received) == 3
    assert "[DONE]" not in received
    assert sim.stats.disconnects == []  # a cut is the server's doing, not the client's


async def test_cut_fault_on_unary_sends_half_a_body(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.add_fault(FaultRule("cut", times=1))
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(CHAT, json=chat())


async def test_malformed_fault_breaks_the_body_and_one_stream_event(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.add_fault(FaultRule("malformed", times=2, after_chunks=2))
    unary = await client.post(CHAT, json=chat())
    assert unary.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(unary.content)

    events = await stream_events(client, chat("a b c"))
    broken = []
    for event in events[:-1]:
        try:
            orjson.loads(event)
        except orjson.JSONDecodeError:
            broken.append(event)
    assert len(broken) == 1 and events.index(broken[0]) == 2
    assert events[-1] == "[DONE]"


async def test_latency_fault_delays_one_answer(sim: Simulator, client: httpx.AsyncClient) -> None:
    sim.add_fault(FaultRule("latency", seconds=0.2, times=1))
    started = time.monotonic()
    assert (await client.post(CHAT, json=chat())).status_code == 200
    assert time.monotonic() - started >= 0.2


async def test_probability_fault_fires_for_about_that_share(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.add_fault(FaultRule("status", status=500, probability=0.3))
    statuses = [(await client.post(CHAT, json=chat())).status_code for _ in range(300)]
    failures = statuses.count(500)
    assert 60 <= failures <= 120  # 90 expected; the seeded draw makes this exact per run
    assert statuses.count(200) == 300 - failures


# -- stats and control API -------------------------------------------------------------------


async def test_stats_count_requests_and_record_headers_and_body(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await client.post(CHAT, json=chat("first"), headers={"traceparent": traceparent})
    await client.post(CHAT, json={**chat(), "model": "sim-large"})
    await client.post(CHAT, json={**chat(), "model": "sim-large"})

    assert sim.stats.count(CHAT) == 3
    assert sim.stats.count(CHAT, "sim-large") == 2
    first = sim.stats.received[0]
    assert first.headers["TraceParent"] == traceparent
    assert first.body["messages"][0]["content"] == "first"
    assert sim.stats.connections_open >= 1

    snapshot = (await client.get("/_sim/stats")).json()
    assert snapshot["total_requests"] == 3
    assert {"path": CHAT, "model": "sim-large", "count": 2} in snapshot["requests"]
    assert snapshot["received"][0]["headers"]["traceparent"] == traceparent


async def test_control_api_sets_faults_config_and_resets(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    added = await client.post("/_sim/faults", json=[{"kind": "status", "status": 502}])
    assert added.status_code == 200 and len(added.json()["faults"]) == 1
    assert (await client.post(CHAT, json=chat())).status_code == 502
    assert (await client.post("/_sim/faults", json={"kind": "explode"})).status_code == 400

    assert (await client.delete("/_sim/faults")).json() == {"faults": []}
    assert (await client.post(CHAT, json=chat())).status_code == 200

    config = await client.put("/_sim/config", json={"latency_ms": 5, "tokens_per_second": 50})
    assert config.json() == {"latency_ms": 5.0, "tokens_per_second": 50.0}
    assert sim.config.tokens_per_second == 50.0

    await client.post("/_sim/faults", json={"kind": "reset"})
    await client.post("/_sim/reset")
    stats = (await client.get("/_sim/stats")).json()
    assert stats["total_requests"] == 0 and stats["faults"] == []


async def test_client_disconnect_mid_stream_is_recorded_at_once(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    # A minute between tokens: noticed "at once" means long before the next write.
    sim.config.tokens_per_second = 1 / 60
    async with client.stream("POST", CHAT, json=chat("/tokens 100 x", stream=True)) as response:
        lines = response.aiter_lines()
        while not (await anext(lines)).startswith("data: "):
            pass
        assert sim.stats.streams_in_flight == 1
        await response.aclose()
    # Closing an unfinished body closes its connection; the server must notice at once.
    await until(lambda: bool(sim.stats.disconnects), "the disconnect recorded", seconds=30)
    [disconnect] = sim.stats.disconnects
    assert disconnect.path == CHAT and disconnect.model == "sim-small"
    assert 1 <= disconnect.events_sent < 100
    assert sim.stats.streams_in_flight == 0

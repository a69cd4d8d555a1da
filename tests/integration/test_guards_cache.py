"""The response cache: what splits its key, and a streamed answer stored whole.

`cache_key` is pure: every field of the request is classified as one that changes
the answer (it must split the key) or one that does not (it must not). End to end,
the simulator's request count says whether an answer came from the cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from ai_service.config import CacheSettings
from ai_service.pipeline.cache import cache_key
from ai_service.simulator import Simulator
from ai_service_client import AsyncAIClient, ChatCompletionRequest, Message
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    FunctionDefinition,
    RequestOptions,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from tests.conftest import TEST_KEY, StartGateway

SETTINGS = CacheSettings(enabled=True)
ROUTE = "route-fingerprint"

Change = Callable[[ChatCompletionRequest], None]


def base() -> ChatCompletionRequest:
    """A cacheable request (a fixed seed) with every answer-shaping field set."""
    return ChatCompletionRequest(
        model="sim-gpt",
        messages=[
            Message(role="system", content="be brief"),
            Message(role="user", content="hello", name="ann"),
        ],
        tools=[
            Tool(
                type="function",
                function=FunctionDefinition(
                    name="weather", description="the weather", parameters_json='{"type":"object"}'
                ),
            )
        ],
        tool_choice=ToolChoice(mode="auto"),
        max_tokens=50,
        temperature=0.2,
        top_p=0.9,
        stop=["\n"],
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.1,
        response_format=ResponseFormat(type="text"),
        user="u1",
        metadata={"team": "a"},
        options=RequestOptions(cache_ttl_seconds=60),
    )


def _set(name: str, value: object) -> Change:
    def change(request: ChatCompletionRequest) -> None:
        setattr(request, name, value)

    return change


def _message(**fields: str) -> Change:
    def change(request: ChatCompletionRequest) -> None:
        for name, value in fields.items():
            setattr(request.messages[1], name, value)

    return change


def _assistant_tool_call(request: ChatCompletionRequest) -> None:
    request.messages[1].tool_calls.append(
        ToolCall(id="c1", type="function", function={"name": "weather", "arguments": "{}"})
    )


# Field of ChatCompletionRequest → changes of it that must each give another key.
ANSWER_CHANGING: dict[str, list[Change]] = {
    "model": [_set("model", "sim-other")],
    "messages": [
        _message(content="goodbye"),
        _message(role="assistant"),
        _message(name="bob"),
        _message(tool_call_id="c1"),
        _assistant_tool_call,
        lambda r: r.messages.append(Message(role="user", content="more")),
    ],
    "tools": [
        lambda r: setattr(r.tools[0].function, "name", "forecast"),
        lambda r: setattr(r.tools[0].function, "description", "the forecast"),
        lambda r: setattr(r.tools[0].function, "parameters_json", '{"type":"string"}'),
        lambda r: setattr(r.tools[0].function, "strict", True),
        lambda r: r.ClearField("tools"),
    ],
    "tool_choice": [
        lambda r: setattr(r.tool_choice, "mode", "required"),
        lambda r: setattr(r.tool_choice, "function", "weather"),
    ],
    "max_tokens": [_set("max_tokens", 51), lambda r: r.ClearField("max_tokens")],
    "temperature": [
        _set("temperature", 0.9),
        _set("temperature", 0.0),
        lambda r: r.ClearField("temperature"),
    ],
    "top_p": [_set("top_p", 0.5), lambda r: r.ClearField("top_p")],
    "stop": [lambda r: r.stop.append("."), lambda r: r.ClearField("stop")],
    "seed": [_set("seed", 8)],
    "presence_penalty": [_set("presence_penalty", 0.5)],
    "frequency_penalty": [_set("frequency_penalty", 0.5)],
    "response_format": [
        lambda r: setattr(r.response_format, "type", "json_object"),
        lambda r: setattr(r.response_format, "json_schema", '{"type":"object"}'),
    ],
    "reasoning": [
        lambda r: setattr(r.reasoning, "effort", "high"),
        lambda r: setattr(r.reasoning, "budget_tokens", 2048),
        lambda r: setattr(r.reasoning, "include_text", True),
    ],
}

# Fields that do not change the answer: they must not split the cache.
NOT_ANSWER_CHANGING: dict[str, list[Change]] = {
    "user": [_set("user", "u2")],
    "metadata": [lambda r: r.metadata.update({"team": "b"})],
    "options": [lambda r: setattr(r.options, "cache_ttl_seconds", 5)],
}

CASES = [
    (field, i, change)
    for field, changes in ANSWER_CHANGING.items()
    for i, change in enumerate(changes)
]
SAME_CASES = [
    (field, i, change)
    for field, changes in NOT_ANSWER_CHANGING.items()
    for i, change in enumerate(changes)
]


def key_of(request: ChatCompletionRequest) -> str:
    key = cache_key(request, SETTINGS, ROUTE)
    assert key is not None, "the request is cacheable (it has a seed)"
    return key


def test_every_request_field_is_classified() -> None:
    """Guards: a field added to ChatCompletionRequest that nobody decided about; it
    would silently share (or split) cached answers."""
    fields = {field.name for field in ChatCompletionRequest.DESCRIPTOR.fields}
    assert fields == set(ANSWER_CHANGING) | set(NOT_ANSWER_CHANGING)


@pytest.mark.parametrize(("field", "index", "change"), CASES, ids=[f"{f}-{i}" for f, i, _ in CASES])
def test_a_field_that_changes_the_answer_splits_the_cache_key(
    field: str, index: int, change: Change
) -> None:
    """Guards: `cache_key` dropping an answer-changing field from the canonical request
    (e.g. `canonical.ClearField("temperature")`): two requests with one seed and
    different temperatures would then share one cached answer."""
    request = base()
    changed = base()
    change(changed)
    assert changed != request, "the change must change the request"
    assert key_of(changed) != key_of(request)


@pytest.mark.parametrize(
    ("field", "index", "change"), SAME_CASES, ids=[f"{f}-{i}" for f, i, _ in SAME_CASES]
)
def test_a_field_that_does_not_change_the_answer_keeps_the_key(
    field: str, index: int, change: Change
) -> None:
    """Guards: `cache_key` keeping user, metadata or gateway options in the key, which
    would split the cache by caller labels for no reason."""
    changed = base()
    change(changed)
    assert key_of(changed) == key_of(base())


def test_the_route_fingerprint_splits_the_cache_key() -> None:
    """Guards: `cache_key` ignoring its route fingerprint, which would serve an answer
    of one route's deployments to a route reconfigured to others."""
    assert cache_key(base(), SETTINGS, "a") != cache_key(base(), SETTINGS, "b")


def hello(**params: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model="sim-gpt", messages=[Message(role="user", content="hello")], **params
    )


async def test_one_seed_two_temperatures_are_two_upstream_calls(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    """Guards: the cache key leaving out `temperature` (`canonical.ClearField(
    "temperature")` in `cache_key`): the second temperature got the first one's answer
    from the cache and never reached the upstream."""
    gateway = await start_gateway(cache={"enabled": True})
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        cool = await client.chat(hello(seed=7, temperature=0.2))
        warm = await client.chat(hello(seed=7, temperature=0.9))
        again = await client.chat(hello(seed=7, temperature=0.2))
    assert (cool.cached, warm.cached, again.cached) == (False, False, True)
    assert [r.body["temperature"] for r in simulator.stats.received] == [0.2, 0.9]


WEATHER = Tool(
    type="function",
    function=FunctionDefinition(
        name="get_weather",
        parameters_json=json.dumps(
            {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            }
        ),
    ),
)


def tool_call_request(**options: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model="sim-gpt",
        messages=[Message(role="user", content="weather in city Paris unit celsius")],
        tools=[WEATHER],
        seed=7,
        options=RequestOptions(**options),
    )


def argument_deltas(chunks: list[ChatCompletionChunk]) -> int:
    return sum(
        1
        for chunk in chunks
        for choice in chunk.choices
        for call in choice.delta.tool_calls
        if call.function.arguments
    )


def assembled(chunks: list[ChatCompletionChunk]) -> list[ToolCall]:
    """The tool calls of the first choice, put together from the stream's deltas."""
    calls: list[ToolCall] = []
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls:
                while len(calls) <= delta.index:
                    calls.append(ToolCall())
                call = calls[delta.index]
                call.id = call.id or delta.id
                call.type = call.type or delta.type
                call.function.name = call.function.name or delta.function.name
                call.function.arguments += delta.function.arguments
    return calls


async def test_a_streamed_tool_call_is_cached_whole(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    """Guards: the stream assembler (`completions._Assembler`) keeping only one piece
    of a tool call's arguments (`=` instead of `+=`), or losing its id, type or name:
    the call replayed from the cache then differed from the one the upstream made."""
    gateway = await start_gateway(cache={"enabled": True})
    # Paced, each piece of the arguments arrives in a read of its own: the gateway
    # folds together only what one read brought.
    simulator.config.tokens_per_second = 20
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        # What the upstream answers, not through the cache.
        expected = await client.chat(tool_call_request(bypass_cache=True))
        streamed = [c async for c in client.stream_chat(tool_call_request())]
        from_cache = await client.chat(tool_call_request())
        replayed = [c async for c in client.stream_chat(tool_call_request())]
    (want,) = expected.choices[0].message.tool_calls
    assert json.loads(want.function.arguments) == {"city": "Paris", "unit": "celsius"}
    assert not any(c.cached for c in streamed)
    assert argument_deltas(streamed) > 1, "the arguments must arrive in several deltas"
    assert assembled(streamed) == [want]

    assert from_cache.cached
    assert list(from_cache.choices[0].message.tool_calls) == [want]
    assert from_cache.choices[0].finish_reason == "tool_calls"
    assert all(c.cached for c in replayed)
    assert assembled(replayed) == [want]
    assert simulator.stats.total_requests == 2  # the bypass and the first stream only

"""The Anthropic adapter on the Messages API's documented examples (tests/fixtures/README.md)."""

from __future__ import annotations

from typing import Any

import grpc
import orjson
import pytest

from ai_service.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamAuth,
    UpstreamInvalidRequest,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from ai_service.providers.anthropic import (
    AnthropicProvider,
    request_body,
    request_refusal,
    response_from_anthropic,
)
from ai_service_protos.ai_service_pb2 import (
    CacheControl,
    ChatCompletionRequest,
    ContentPart,
    FunctionDefinition,
    Message,
    ReasoningConfig,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from tests.fixtures import RecordedHttp, load_bytes, load_json, settings
from tests.fixtures.provider_streams import (
    ANTHROPIC_DEPLOYMENT,
    anthropic_sse,
    anthropic_stream_bytes,
    anthropic_stream_fixture,
)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}
    },
    "required": ["location"],
}


def weather_conversation() -> ChatCompletionRequest:
    call = ToolCall(id="toolu_01A09q90qw90lq917835lq9", type="function")
    call.function.name = "get_weather"
    call.function.arguments = '{"location": "San Francisco, CA"}'
    return ChatCompletionRequest(
        model="claude",
        messages=[
            Message(role="system", content="You are a weather assistant."),
            Message(role="user", content="What's the weather like in San Francisco?"),
            Message(
                role="assistant",
                content="I'll check the current weather in San Francisco for you.",
                tool_calls=[call],
            ),
            Message(role="tool", tool_call_id=call.id, content="15 degrees"),
        ],
        tools=[
            Tool(
                type="function",
                function=FunctionDefinition(
                    name="get_weather",
                    description="Get the current weather in a given location",
                    parameters_json=orjson.dumps(WEATHER_SCHEMA).decode(),
                ),
            )
        ],
        tool_choice=ToolChoice(mode="auto"),
    )


def test_request_is_the_documented_tool_use_round_trip() -> None:
    body = request_body(
        weather_conversation(), ANTHROPIC_DEPLOYMENT.upstream_model, 1024, stream=False
    )
    assert body == load_json("anthropic/tool_use_request.json")


def test_a_tool_choice_without_tools_is_left_out() -> None:
    # Anthropic answers 400 to a `tool_choice` without `tools`, even `none`.
    request = weather_conversation()
    del request.tools[:]
    request.tool_choice.mode = "none"
    assert "tool_choice" not in request_body(request, "m", 1024, stream=False)


def test_consecutive_same_role_messages_are_merged_tool_results_first() -> None:
    request = weather_conversation()
    request.messages.append(Message(role="user", content="And in Celsius?"))
    body = request_body(request, "m", 1024, stream=False)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][-1]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
            "content": "15 degrees",
        },
        {"type": "text", "text": "And in Celsius?"},
    ]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        (ToolChoice(mode="auto"), {"type": "auto"}),
        (ToolChoice(mode="required"), {"type": "any"}),
        (ToolChoice(mode="none"), {"type": "none"}),
        (ToolChoice(function="get_weather"), {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice(choice: ToolChoice, wire: dict[str, str]) -> None:
    request = weather_conversation()
    request.tool_choice.CopyFrom(choice)
    assert request_body(request, "m", 1024, stream=False)["tool_choice"] == wire


def test_max_tokens_stop_sampling_and_user() -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")],
        max_tokens=50,
        stop=["END"],
        temperature=0.0,
        top_p=0.5,
        seed=3,
        user="u-9",
    )
    body = request_body(request, "m", 1024, stream=True)
    assert body == {
        "model": "m",
        "max_tokens": 50,  # the request's own, not the default
        "messages": [{"role": "user", "content": "hi"}],
        "stop_sequences": ["END"],
        "temperature": 0.0,
        "top_p": 0.5,
        "metadata": {"user_id": "u-9"},
        "stream": True,
    }  # no seed: the Messages API has none


def test_a_json_response_format_is_refused_not_ignored() -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")],
        response_format=ResponseFormat(type="json_object"),
    )
    with pytest.raises(InvalidRequest) as caught:
        request_body(request, "m", 1024, stream=False)
    assert caught.value.field == "response_format.type"


def test_a_temperature_above_anthropics_range_is_refused_before_any_call() -> None:
    too_hot = ChatCompletionRequest(messages=[Message(role="user", content="hi")], temperature=1.5)
    with pytest.raises(InvalidRequest) as caught:
        request_body(too_hot, "m", 1024, stream=False)
    assert caught.value.field == "temperature"
    at_most = ChatCompletionRequest(messages=[Message(role="user", content="hi")], temperature=1)
    assert request_body(at_most, "m", 1024, stream=False)["temperature"] == 1


def test_documented_tool_use_response() -> None:
    response = response_from_anthropic(load_json("anthropic/tool_use_response.json"))
    assert response.id == "msg_01Aq9w938a90dw8q"
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check the current weather in San Francisco for you."
    (call,) = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == (
        "toolu_01A09q90qw90lq917835lq9",
        "function",
        "get_weather",
    )
    assert orjson.loads(call.function.arguments) == {"location": "San Francisco, CA"}
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (384, 71)
    assert response.usage.total_tokens == 455


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons_become_finish_reasons(stop_reason: str, finish: str) -> None:
    payload = load_json("anthropic/tool_use_response.json")
    payload["stop_reason"] = stop_reason
    assert response_from_anthropic(payload).choices[0].finish_reason == finish


async def test_documented_text_stream() -> None:
    chunks = await anthropic_stream_fixture("anthropic/stream_text.sse")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content for c in chunks) == "Hello!"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (25, 15)
    assert {c.id for c in chunks} == {"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}


async def test_documented_tool_use_stream_assembles_the_arguments() -> None:
    chunks = await anthropic_stream_fixture("anthropic/stream_tool_use.sse")
    text = "".join(c.choices[0].delta.content for c in chunks)
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    pieces = [d for c in chunks for d in c.choices[0].delta.tool_calls]
    assert {p.index for p in pieces} == {0}  # the first tool call, though content block 1
    assert (pieces[0].id, pieces[0].type, pieces[0].function.name) == (
        "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "function",
        "get_weather",
    )
    arguments = "".join(p.function.arguments for p in pieces)
    assert orjson.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage.completion_tokens == 89


async def test_stream_without_message_stop_is_unavailable() -> None:
    body = load_bytes("anthropic/stream_text.sse").split(b"event: message_stop")[0]
    with pytest.raises(UpstreamUnavailable, match="without message_stop"):
        await anthropic_stream_bytes(body)


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [("overloaded_error", UpstreamUnavailable), ("rate_limit_error", UpstreamRateLimited)],
)
async def test_error_event_mid_stream(error_type: str, expected: type[GatewayError]) -> None:
    head = load_bytes("anthropic/stream_text.sse").split(b"event: content_block_stop")[0]
    event = {"type": "error", "error": {"type": error_type, "message": "Overloaded"}}
    with pytest.raises(expected):
        await anthropic_stream_bytes(head + anthropic_sse(event))


@pytest.mark.parametrize("status", [529, 429])
async def test_overloaded_error_is_unavailable_whatever_the_status(status: int) -> None:
    http = RecordedHttp(
        load_bytes("anthropic/error_overloaded.json"),
        status=status,
        headers={"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy", "retry-after": "3"},
    )
    provider = AnthropicProvider(settings("anthropic", api_key="sk-ant-secret"), http)
    with pytest.raises(UpstreamUnavailable) as caught:
        await provider.complete(ChatCompletionRequest(), ANTHROPIC_DEPLOYMENT)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.retryable
    assert caught.value.metadata["upstream_request_id"] == "req_011CSHoEeqs5C35K2UUqR7Fy"
    assert "Overloaded" in caught.value.message
    url, _, headers = http.sent[0]
    assert url == "http://upstream.invalid/v1/messages"
    assert headers["x-api-key"] == "sk-ant-secret"
    assert headers["anthropic-version"] == "2023-06-01"


async def test_rate_limit_error_carries_retry_after() -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}})
    http = RecordedHttp(body, status=429, headers={"retry-after": "12"})
    provider = AnthropicProvider(settings("anthropic"), http)
    with pytest.raises(UpstreamRateLimited) as caught:
        await provider.complete(ChatCompletionRequest(), ANTHROPIC_DEPLOYMENT)
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.retry_after == 12.0


async def test_a_unary_call_sends_no_stream_flag_and_the_fallback_or_model_max_tokens() -> None:
    # max_tokens is required by the Messages API: the model's default, else 1024.
    http = RecordedHttp(load_bytes("anthropic/tool_use_response.json"))
    provider = AnthropicProvider(settings("anthropic"), http)
    request = ChatCompletionRequest(messages=[Message(role="user", content="Hello, world")])
    await provider.complete(request, ANTHROPIC_DEPLOYMENT)
    await provider.complete(request, ANTHROPIC_DEPLOYMENT, 2048)
    (_, fallback, _), (_, model_default, _) = http.sent
    assert fallback == {
        "model": "claude-opus-4-1-20250805",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, world"}],
    }
    assert model_default == {**fallback, "max_tokens": 2048}


async def test_a_streamed_call_asks_the_api_for_a_stream() -> None:
    http = RecordedHttp(load_bytes("anthropic/stream_text.sse"))
    provider = AnthropicProvider(settings("anthropic"), http)
    request = ChatCompletionRequest(messages=[Message(role="user", content="Hello")])
    [c async for c in provider.stream(request, ANTHROPIC_DEPLOYMENT, 2048)]
    ((_, body, headers),) = http.sent
    assert body == {
        "model": "claude-opus-4-1-20250805",
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": True,
    }
    assert headers["accept"] == "text/event-stream"


@pytest.mark.parametrize(
    ("status", "error_type", "expected", "code"),
    [
        (400, "invalid_request_error", UpstreamInvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        # The gateway's own credential was refused: not the caller's fault.
        (401, "authentication_error", UpstreamAuth, grpc.StatusCode.INTERNAL),
        (404, "not_found_error", UpstreamNotFound, grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_errors_other_than_overloaded_keep_the_status_meaning(
    status: int, error_type: str, expected: type[GatewayError], code: grpc.StatusCode
) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": error_type, "message": "no"}})
    provider = AnthropicProvider(settings("anthropic"), RecordedHttp(body, status=status))
    with pytest.raises(expected) as caught:
        await provider.complete(ChatCompletionRequest(), ANTHROPIC_DEPLOYMENT)
    # The status's own meaning reaches the caller, not the UNAVAILABLE of an overload.
    assert caught.value.code is code


async def test_an_error_page_that_is_not_json_is_classified_by_its_status() -> None:
    # A proxy in front of the API may answer with HTML: no `error.type` to read.
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    provider = AnthropicProvider(settings("anthropic"), RecordedHttp(page, status=502))
    with pytest.raises(UpstreamUnavailable, match="502 Bad Gateway"):
        await provider.complete(ChatCompletionRequest(), ANTHROPIC_DEPLOYMENT)


def test_a_text_response_format_is_taken_and_sent_as_nothing() -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")], response_format=ResponseFormat(type="text")
    )
    assert request_refusal(request) is None
    assert request_body(request, "m", 1024, stream=False) == {
        "model": "m",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
    }


def four_cache_marks() -> ChatCompletionRequest:
    """The weather conversation with a cache mark on the tool, the system prompt, the
    question and the tool result: the four breakpoints the prompt-caching guide allows."""
    request = weather_conversation()
    request.tools[0].cache_control.CopyFrom(CacheControl())
    request.messages[0].cache_control.CopyFrom(CacheControl(type="ephemeral"))
    request.messages[1].cache_control.CopyFrom(CacheControl(ttl="5m"))
    request.messages[3].cache_control.CopyFrom(CacheControl(ttl="1h"))
    return request


def test_four_cache_marks_go_on_the_tool_the_system_text_and_the_blocks_they_follow() -> None:
    request = four_cache_marks()
    assert request_refusal(request) is None
    body = request_body(request, "m", 1024, stream=False)
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["system"] == [
        {
            "type": "text",
            "text": "You are a weather assistant.",
            "cache_control": {"type": "ephemeral"},
        }
    ]
    assert body["messages"][0] == {
        "role": "user",
        "content": [  # not the short string form, which has no room for the mark
            {
                "type": "text",
                "text": "What's the weather like in San Francisco?",
                "cache_control": {"type": "ephemeral", "ttl": "5m"},
            }
        ],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                "content": "15 degrees",
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            }
        ],
    }


def refused_field(request: ChatCompletionRequest) -> str | None:
    """The field `request_refusal` names, or None when it takes the request."""
    refusal = request_refusal(request)
    return None if refusal is None else refusal.field


def test_a_fifth_cache_mark_is_refused_by_its_field() -> None:
    request = four_cache_marks()
    request.messages.append(
        Message(role="user", content="And in Celsius?", cache_control=CacheControl())
    )
    assert refused_field(request) == "messages[4].cache_control"


def test_a_tool_result_with_parts_marks_its_text_block_not_the_result() -> None:
    request = weather_conversation()
    request.messages[3].parts.add(text="Sunny.")
    request.messages[3].cache_control.CopyFrom(CacheControl())
    body = request_body(request, "m", 1024, stream=False)
    assert body["messages"][2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
            "content": [
                {"type": "text", "text": "15 degrees", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Sunny."},
            ],
        }
    ]


def test_system_text_parts_follow_the_content_and_stand_alone_without_it() -> None:
    request = weather_conversation()
    request.messages[0].parts.add(text="Use metric units.")
    request.messages.insert(1, Message(role="developer", parts=[ContentPart(text="Be brief.")]))
    request.messages[-1].ClearField("content")
    request.messages[-1].parts.add(text="15 degrees")
    body = request_body(request, "m", 1024, stream=False)
    assert body["system"] == "You are a weather assistant.\n\nUse metric units.\n\nBe brief."
    assert body["messages"][2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
            "content": [{"type": "text", "text": "15 degrees"}],  # no empty text block first
        }
    ]


def thinking_request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(messages=[Message(role="user", content="hi")], **fields)


@pytest.mark.parametrize(("max_tokens", "refused"), [(2047, True), (2048, True), (2049, False)])
def test_max_tokens_must_be_above_the_thinking_budget(max_tokens: int, refused: bool) -> None:
    request = thinking_request(reasoning=ReasoningConfig(budget_tokens=2048), max_tokens=max_tokens)
    assert refused_field(request) == ("reasoning.budget_tokens" if refused else None)


def test_an_effort_whose_budget_reaches_max_tokens_is_refused_as_the_effort() -> None:
    # "low" is a budget of 1024 tokens.
    request = thinking_request(reasoning=ReasoningConfig(effort="low"), max_tokens=1024)
    assert refused_field(request) == "reasoning.effort"


@pytest.mark.parametrize(("top_p", "refused"), [(0.94, True), (0.95, False), (1.0, False)])
def test_with_thinking_on_top_p_is_taken_from_0_95_up(top_p: float, refused: bool) -> None:
    request = thinking_request(reasoning=ReasoningConfig(budget_tokens=1024), top_p=top_p)
    assert refused_field(request) == ("top_p" if refused else None)
    if not refused:
        assert request_body(request, "m", 1024, stream=False)["top_p"] == top_p


def test_thinking_off_leaves_max_tokens_at_the_default() -> None:
    request = thinking_request(reasoning=ReasoningConfig(off=True))
    assert request_body(request, "m", 1024, stream=False) == {
        "model": "m",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "disabled"},
    }

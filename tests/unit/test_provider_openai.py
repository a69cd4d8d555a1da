"""The OpenAI adapter on the chat-completions API's documented examples
(tests/fixtures/README.md)."""

from __future__ import annotations

import orjson
import pytest

from ai_service.errors import UpstreamUnavailable
from ai_service.providers.openai import (
    OpenAIProvider,
    chunk_from_openai,
    request_body,
    response_from_openai,
)
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    FunctionDefinition,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from tests.fixtures import RecordedHttp, load_bytes, load_json, settings
from tests.fixtures.provider_streams import (
    OPENAI_DEPLOYMENT,
    REFUSAL,
    openai_sse,
    openai_stream,
    openai_stream_bytes,
)


def test_request_carries_tools_choice_stop_seed_and_response_format() -> None:
    call = ToolCall(id="call_abc123", type="function")
    call.function.name = "get_current_weather"
    call.function.arguments = '{"location": "Boston, MA"}'
    request = ChatCompletionRequest(
        messages=[
            Message(role="user", content="What's the weather like in Boston today?"),
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id="call_abc123", content="22C"),
        ],
        tools=[
            Tool(
                type="function",
                function=FunctionDefinition(
                    name="get_current_weather",
                    description="Get the current weather in a given location",
                    parameters_json=orjson.dumps(
                        {"type": "object", "properties": {"location": {"type": "string"}}}
                    ).decode(),
                    strict=True,
                ),
            )
        ],
        tool_choice=ToolChoice(function="get_current_weather"),
        stop=["\n"],
        seed=7,
        response_format=ResponseFormat(
            type="json_schema", schema_name="weather", json_schema='{"type": "object"}', strict=True
        ),
    )
    body = request_body(request, "gpt-4o-mini", "max_completion_tokens", stream=True)
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc123",
                "type": "function",
                "function": {
                    "name": "get_current_weather",
                    "arguments": '{"location": "Boston, MA"}',
                },
            }
        ],
    }
    assert body["messages"][2] == {"role": "tool", "content": "22C", "tool_call_id": "call_abc123"}
    assert body["tools"][0]["function"]["parameters"]["properties"] == {
        "location": {"type": "string"}
    }
    assert body["tools"][0]["function"]["strict"] is True
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_current_weather"}}
    assert body["stop"] == ["\n"]
    assert body["seed"] == 7
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": {"type": "object"}, "strict": True},
    }
    assert body["stream_options"] == {"include_usage": True}


def test_documented_tool_calls_response() -> None:
    response = response_from_openai(load_json("openai/tool_calls_response.json"))
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == ""
    (call,) = choice.message.tool_calls
    assert (call.id, call.function.name) == ("call_abc123", "get_current_weather")
    assert orjson.loads(call.function.arguments) == {"location": "Boston, MA"}
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (82, 99)


def test_legacy_function_call_finish_reason_is_tool_calls() -> None:
    payload = load_json("openai/tool_calls_response.json")
    payload["choices"][0]["finish_reason"] = "function_call"
    assert response_from_openai(payload).choices[0].finish_reason == "tool_calls"


async def test_streamed_tool_call_deltas_assemble_and_usage_comes_with_the_finish() -> None:
    chunks = await openai_stream_bytes(load_bytes("openai/stream_tool_calls.sse"))
    pieces = [d for c in chunks for ch in c.choices for d in ch.delta.tool_calls]
    assert pieces[0].id == "call_abc123" and pieces[0].function.name == "get_current_weather"
    arguments = "".join(p.function.arguments for p in pieces)
    assert orjson.loads(arguments) == {"location": "Boston, MA"}
    # Pieces of one call that arrived in one read travel as one chunk.
    assert len(pieces) == 1
    last = chunks[-1]
    assert last.choices[0].finish_reason == "tool_calls"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (82, 17)
    assert all(not c.HasField("usage") for c in chunks[:-1])


TEXT_EVENTS = [
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
    }
    for word in ("Hello", " there", "!")
]
FINISH_EVENT = {**TEXT_EVENTS[0], "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


async def test_a_text_event_read_on_its_own_is_the_chunk_a_full_translation_makes() -> None:
    # 7-byte reads: no event shares a read, so none can join the chunk before it.
    chunks = await openai_stream_bytes(openai_sse(*TEXT_EVENTS, FINISH_EVENT), piece=7)
    assert chunks[:-1] == [chunk_from_openai(event) for event in TEXT_EVENTS]
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_a_text_event_with_a_field_of_the_wrong_type_is_the_upstreams_fault() -> None:
    bad = {**TEXT_EVENTS[0], "id": 5}
    with pytest.raises(UpstreamUnavailable, match="unexpected body"):
        await openai_stream_bytes(openai_sse(bad), piece=7)


def test_max_tokens_goes_out_under_the_field_the_provider_is_configured_with() -> None:
    # OpenAI deprecated `max_tokens` and its reasoning models refuse it.
    request = ChatCompletionRequest(messages=[Message(role="user", content="hi")], max_tokens=9)
    default = settings("openai").max_tokens_field
    assert request_body(request, "gpt-5-mini", default, stream=False)["max_completion_tokens"] == 9
    legacy = settings("openai", max_tokens_field="max_tokens").max_tokens_field
    body = request_body(request, "m", legacy, stream=False)
    assert body["max_tokens"] == 9 and "max_completion_tokens" not in body


def test_a_tool_choice_without_tools_is_left_out() -> None:
    # OpenAI answers 400 to a `tool_choice` without `tools`, even "none" or "auto".
    for mode in ("none", "auto"):
        request = ChatCompletionRequest(
            messages=[Message(role="user", content="hi")], tool_choice=ToolChoice(mode=mode)
        )
        assert "tool_choice" not in request_body(request, "m", "max_tokens", stream=False)


async def test_done_without_a_finish_chunk_is_an_interrupted_stream() -> None:
    with pytest.raises(UpstreamUnavailable, match=r"\[DONE\] without a finish_reason"):
        await openai_stream(*TEXT_EVENTS)


USAGE_EVENT = {
    **TEXT_EVENTS[0],
    "choices": [],
    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
}


async def test_usage_is_kept_whatever_follows_it_and_empty_events_are_not_chunks() -> None:
    # Azure opens with a `choices: []` event of prompt-filter results; an event after the
    # usage one carries no usage of its own.
    empty = {**TEXT_EVENTS[0], "choices": [], "prompt_filter_results": []}
    chunks = await openai_stream(empty, *TEXT_EVENTS, FINISH_EVENT, USAGE_EVENT, empty)
    assert all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content for c in chunks) == "Hello there!"
    assert chunks[-1].usage.total_tokens == 6


def test_a_refusal_is_the_answer_and_ends_as_content_filter() -> None:
    payload = load_json("openai/tool_calls_response.json")
    payload["choices"][0].update(
        message={"role": "assistant", "content": None, "refusal": REFUSAL},
        finish_reason="stop",
    )
    choice = response_from_openai(payload).choices[0]
    assert (choice.message.content, choice.finish_reason) == (REFUSAL, "content_filter")


async def test_a_streamed_refusal_is_the_answer_and_ends_as_content_filter() -> None:
    refusing = [
        {**TEXT_EVENTS[0], "choices": [{"index": 0, "delta": {"refusal": piece}}]}
        for piece in (REFUSAL[:10], REFUSAL[10:])
    ]
    chunks = await openai_stream(*refusing, FINISH_EVENT, USAGE_EVENT)
    assert "".join(c.choices[0].delta.content for c in chunks) == REFUSAL
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_a_tool_and_a_tool_call_without_a_type_go_out_as_functions() -> None:
    # An empty `type` means "function" (the proto's Tool and ToolCall say so).
    call = ToolCall(id="call_abc123")
    call.function.name = "get_current_weather"
    call.function.arguments = '{"location": "Boston, MA"}'
    request = ChatCompletionRequest(
        messages=[
            Message(role="user", content="What's the weather like in Boston today?"),
            Message(role="assistant", tool_calls=[call]),
        ],
        tools=[
            Tool(
                function=FunctionDefinition(
                    name="get_current_weather",
                    description="Get the current weather in a given location",
                )
            ),
            Tool(function=FunctionDefinition(name="get_time")),
        ],
    )
    body = request_body(request, "gpt-4o-mini", "max_completion_tokens", stream=False)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
            },
        },
        {"type": "function", "function": {"name": "get_time"}},  # no empty description
    ]
    assert body["messages"][1]["tool_calls"] == [
        {
            "id": "call_abc123",
            "type": "function",
            "function": {"name": "get_current_weather", "arguments": '{"location": "Boston, MA"}'},
        }
    ]


@pytest.mark.parametrize("mode", ["none", "auto", "required"])
def test_a_tool_choice_mode_goes_out_as_the_bare_string(mode: str) -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")],
        tools=[Tool(type="function", function=FunctionDefinition(name="get_time"))],
        tool_choice=ToolChoice(mode=mode),
    )
    assert request_body(request, "m", "max_completion_tokens", stream=False)["tool_choice"] == mode


def test_an_assistant_message_with_text_and_tool_calls_keeps_its_text() -> None:
    # Only a message that does nothing but call tools has `content: null`.
    call = ToolCall(id="call_abc123", type="function")
    call.function.name = "get_current_weather"
    call.function.arguments = "{}"
    message = Message(role="assistant", content="Let me look that up.", tool_calls=[call])
    request = ChatCompletionRequest(messages=[message])
    body = request_body(request, "gpt-4o-mini", "max_completion_tokens", stream=False)
    assert body["messages"][0]["content"] == "Let me look that up."


def test_only_a_streaming_request_asks_for_a_stream_and_its_usage() -> None:
    request = ChatCompletionRequest(messages=[Message(role="user", content="hi")])
    streaming = request_body(request, "gpt-4o-mini", "max_completion_tokens", stream=True)
    assert streaming["stream"] is True
    assert streaming["stream_options"] == {"include_usage": True}
    plain = request_body(request, "gpt-4o-mini", "max_completion_tokens", stream=False)
    assert plain == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("kind", ["text", "json_object"])
def test_a_response_format_other_than_a_json_schema_is_its_type_alone(kind: str) -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")],
        response_format=ResponseFormat(type=kind, schema_name="ignored"),
    )
    body = request_body(request, "gpt-4o-mini", "max_completion_tokens", stream=False)
    assert body["response_format"] == {"type": kind}


def test_a_response_format_without_a_type_is_left_out() -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")], response_format=ResponseFormat()
    )
    assert "response_format" not in request_body(request, "m", "max_tokens", stream=False)


async def test_a_completion_is_asked_for_without_a_stream() -> None:
    http = RecordedHttp(load_bytes("openai/tool_calls_response.json"))
    provider = OpenAIProvider(settings("openai"), http)
    request = ChatCompletionRequest(messages=[Message(role="user", content="hi")])
    await provider.complete(request, OPENAI_DEPLOYMENT)
    ((url, body, _),) = http.sent
    assert url == "http://upstream.invalid/chat/completions"
    assert body == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_only_the_bare_done_marker_ends_a_stream() -> None:
    # `"[DONE]"` is a JSON string, not the marker: an event that is no object is broken.
    quoted = b'data: "[DONE]"\n\n'
    body = openai_sse(*TEXT_EVENTS, FINISH_EVENT, USAGE_EVENT).replace(
        b"data: [DONE]", quoted + b"data: [DONE]"
    )
    with pytest.raises(UpstreamUnavailable, match="str in a stream event, not an object"):
        await openai_stream_bytes(body)


async def test_after_the_finish_reason_only_the_usage_is_taken() -> None:
    # The finish chunk ends the answer; a text delta after it adds nothing.
    late = {**TEXT_EVENTS[0], "choices": [{"index": 0, "delta": {"content": " Late."}}]}
    chunks = await openai_stream(*TEXT_EVENTS, FINISH_EVENT, late, USAGE_EVENT)
    assert "".join(c.choices[0].delta.content for c in chunks) == "Hello there!"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.total_tokens == 6

"""The HTTP door's translators: OpenAI's and Anthropic's JSON to the service's messages
and back, and the gateway's errors in each API's shape."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from ai_service.doors import anthropic, openai
from ai_service.doors.errors import (
    anthropic_error,
    error_headers,
    http_status,
    openai_error,
)
from ai_service.errors import (
    BudgetExceeded,
    Draining,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    RateLimited,
    StreamInterrupted,
    Unauthenticated,
    UpstreamUnavailable,
)
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    Usage,
)

PNG = b"\x89PNG\r\n\x1a\n fake"
OBJECT = {"type": "object"}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
FILE_BY_ID = {"type": "file", "file": {"file_id": "f"}}
INVALID = InvalidRequest("temperature", "too hot")
REFUSED = "invalid_request_error"


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of an Anthropic event stream."""
    out = []
    for block in data.decode().split("\n\n"):
        if block:
            name, payload = block.split("\n")
            out.append((name.removeprefix("event: "), orjson.loads(payload.removeprefix("data: "))))
    return out


# --- OpenAI in ---------------------------------------------------------------------------


def test_an_openai_body_becomes_the_services_request() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {
                            "url": "data:image/png;base64," + base64.b64encode(PNG).decode(),
                            "detail": "low",
                        },
                    },
                    {"type": "text", "text": "and this"},
                ],
            },
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "temperature": 0,
        "stop": "END",
        "reasoning_effort": "minimal",
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}},
        "stream": True,
        "stream_options": {"include_usage": True},
        "store": True,  # changes nothing of the answer: let through
        "options": {"bypass_cache": True},
    }
    request, streaming, include_usage = openai.chat_request(body)
    assert (streaming, include_usage) == (True, True)
    system, user = request.messages
    assert (system.role, system.content) == ("developer", "be brief")
    assert user.content == "what is this?"
    image, text = user.parts
    assert (image.image.data, image.image.media_type, image.image.detail) == (
        PNG,
        "image/png",
        "low",
    )
    assert text.text == "and this"
    assert orjson.loads(request.tools[0].function.parameters_json) == {"type": "object"}
    assert request.tool_choice.function == "f"
    assert request.max_tokens == 20  # max_completion_tokens wins
    assert request.HasField("temperature") and request.temperature == 0
    assert list(request.stop) == ["END"]
    assert request.reasoning.effort == "low"
    assert request.response_format.type == "json_schema"
    assert request.response_format.schema_name == "s"
    assert request.options.bypass_cache


@pytest.mark.parametrize(
    ("effort", "setting"),
    [("none", ("off", True)), ("xhigh", ("effort", "high")), ("medium", ("effort", "medium"))],
)
def test_reasoning_effort_maps_onto_the_services_three(
    effort: str, setting: tuple[str, object]
) -> None:
    request, _, _ = openai.chat_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort}
    )
    which = request.reasoning.WhichOneof("setting")
    assert (which, getattr(request.reasoning, str(which))) == setting


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        ({"messages": "hello"}, "messages"),
        ({"temperature": "hot"}, "temperature"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}
                ]
            },
            "messages[0].content[0].file.file_id",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:x"}}],
                    }
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
    ],
)
def test_what_cannot_be_carried_is_refused_by_field(change: dict[str, Any], field: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **change}
    with pytest.raises(InvalidRequest) as refused:
        openai.chat_request(body)
    assert refused.value.field == field


def test_an_assistant_turn_comes_back_with_its_tool_calls_and_reasoning() -> None:
    message = openai.message_from(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
            "reasoning": [{"text": "hmm", "signature": "sig"}],
        },
        "messages[1]",
    )
    assert message.tool_calls[0].id == "c1" and message.tool_calls[0].function.name == "f"
    assert (message.reasoning[0].text, message.reasoning[0].signature) == ("hmm", "sig")


# --- OpenAI out --------------------------------------------------------------------------


def test_a_completion_in_openais_shape() -> None:
    response = ChatCompletionResponse(id="c", model="u", created=5)
    choice = response.choices.add(index=0, finish_reason="tool_calls")
    choice.message.role = "assistant"
    call = choice.message.tool_calls.add(id="t", type="function")
    call.function.name, call.function.arguments = "f", '{"a":1}'
    choice.message.reasoning.add(text="because", signature="s")
    response.usage.CopyFrom(
        Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7, reasoning_tokens=2)
    )
    response.cost.amount, response.cost.currency = 0.5, "USD"
    out = orjson.loads(openai.completion_json(response))
    message = out["choices"][0]["message"]
    assert message["content"] is None  # only calls tools: OpenAI's null
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert message["reasoning_content"] == "because"
    assert message["reasoning"] == [{"text": "because", "signature": "s"}]
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2
    assert out["cost"] == {"amount": 0.5, "currency": "USD"}
    assert "cached" not in out


def chunk(text: str = "", **fields: Any) -> ChatCompletionChunk:
    made = ChatCompletionChunk(id="c", model="u", created=1)
    piece = made.choices.add(index=0)
    piece.delta.content = text
    for name, value in fields.items():
        if name == "finish_reason":
            piece.finish_reason = value
        elif name == "role":
            piece.delta.role = value
    return made


def test_the_quick_text_event_is_the_full_translations_bytes() -> None:
    writer = openai.ChunkWriter(chunk(role="assistant"), include_usage=True)
    plain = chunk('say "hi" ☃')
    assert openai.text_only(plain) == (0, 'say "hi" ☃')
    assert writer.text_event(0, 'say "hi" ☃') == writer.event(plain)


def test_the_last_chunk_splits_into_finish_and_usage_when_asked() -> None:
    last = chunk(finish_reason="stop")
    last.usage.CopyFrom(Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3))
    with_usage = openai.ChunkWriter(last, include_usage=True).event(last)
    finish, usage = [orjson.loads(e.removeprefix(b"data: ")) for e in with_usage.split(b"\n\n")[:2]]
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["usage"] is None
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 3
    without = openai.ChunkWriter(last, include_usage=False).event(last)
    assert without.count(b"data: ") == 1 and b"usage" not in without


def test_embeddings_in_either_encoding() -> None:
    request = openai.embed_request({"model": "e", "input": "one", "encoding_format": "base64"})
    assert list(request.inputs) == ["one"] and request.encoding_format == "base64"
    with pytest.raises(InvalidRequest) as tokens:
        openai.embed_request({"model": "e", "input": [[1, 2]]})
    assert tokens.value.field == "input[0]"


# --- Anthropic in ------------------------------------------------------------------------


def test_an_anthropic_body_becomes_the_services_request() -> None:
    body = {
        "model": "m",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "18 C"},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
        "tools": [{"name": "w", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
        "thinking": {"type": "enabled", "budget_tokens": 2048, "display": "omitted"},
        "metadata": {"user_id": "u1"},
        "stream": True,
    }
    request, streaming = anthropic.messages_request(body)
    assert streaming
    roles = [m.role for m in request.messages]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    system, _, assistant, tool, after = request.messages
    assert system.content == "rules" and system.HasField("cache_control")
    assert (assistant.reasoning[0].text, assistant.reasoning[0].signature) == ("hm", "sig")
    assert orjson.loads(assistant.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert (tool.tool_call_id, tool.content, after.content) == ("t1", "18 C", "thanks")
    assert request.tool_choice.mode == "required"
    assert request.reasoning.budget_tokens == 2048 and not request.reasoning.include_text
    assert (request.max_tokens, request.user) == (100, "u1")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"top_k": 5}, "top_k"),
        ({"tools": [{"type": "web_search_20250305", "name": "s"}]}, "tools[0].type"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
    ],
)
def test_anthropic_refusals_name_the_field(change: dict[str, Any], field: str) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    body.update(change)
    if body["max_tokens"] is None:
        del body["max_tokens"]
    with pytest.raises(InvalidRequest) as refused:
        anthropic.messages_request(body)
    assert refused.value.field == field


# --- Anthropic out -----------------------------------------------------------------------


def test_a_message_in_anthropics_shape() -> None:
    response = ChatCompletionResponse(id="msg_1", model="u")
    choice = response.choices.add(index=0, finish_reason="length")
    choice.message.content = "cut"
    choice.message.reasoning.add(redacted_data="opaque")
    response.usage.CopyFrom(
        Usage(prompt_tokens=10, completion_tokens=2, cached_tokens=3, cache_write_tokens=4)
    )
    out = orjson.loads(anthropic.message_json(response))
    assert out["content"] == [
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "cut"},
    ]
    assert out["stop_reason"] == "max_tokens"
    assert out["usage"] == {
        "input_tokens": 3,
        "output_tokens": 2,
        "cache_creation_input_tokens": 4,
        "cache_read_input_tokens": 3,
    }


def test_the_event_stream_opens_and_closes_one_block_at_a_time() -> None:
    writer = anthropic.EventWriter()
    first = chunk(role="assistant")
    thinking = chunk()
    thinking.choices[0].delta.reasoning.add(index=0, text="let me see")
    signed = chunk()
    signed.choices[0].delta.reasoning.add(index=0, signature="sig")
    call = chunk()
    piece = call.choices[0].delta.tool_calls.add(index=0, id="t1", type="function")
    piece.function.name, piece.function.arguments = "w", '{"a":'
    more = chunk()
    more.choices[0].delta.tool_calls.add(index=0).function.arguments = "1}"
    last = chunk(finish_reason="tool_calls")
    last.usage.CopyFrom(Usage(prompt_tokens=5, completion_tokens=6))
    wire = writer.start(first) + writer.event(first)
    for item in (thinking, signed):
        wire += writer.event(item)
    wire += writer.text("ok") + writer.event(call) + writer.event(more) + writer.event(last)
    wire += writer.stop()
    seen = events(wire)
    assert [name for name, _ in seen] == [
        "message_start",
        "content_block_start",  # thinking
        "content_block_delta",
        "content_block_delta",  # its signature
        "content_block_stop",
        "content_block_start",  # text
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # tool_use
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [data["index"] for name, data in seen if name == "content_block_start"] == [0, 1, 2]
    assert seen[3][1]["delta"] == {"type": "signature_delta", "signature": "sig"}
    assert seen[8][1]["content_block"]["id"] == "t1"
    assert seen[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert seen[-2][1]["usage"]["output_tokens"] == 6


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "openai_type", "anthropic_type"),
    [
        (
            InvalidRequest("temperature", "too hot"),
            400,
            "invalid_request_error",
            "invalid_request_error",
        ),
        (Unauthenticated("invalid API key"), 401, "authentication_error", "authentication_error"),
        (ModelNotFound("no"), 404, "not_found_error", "not_found_error"),
        (
            RateLimited("slow", retry_after=1.5, subject="k", quota="q"),
            429,
            "rate_limit_error",
            "rate_limit_error",
        ),
        (
            BudgetExceeded("spent", retry_after=3600, subject="k", quota="q"),
            429,
            "insufficient_quota",
            "rate_limit_error",
        ),
        (UpstreamUnavailable("down"), 503, "server_error", "api_error"),
        (
            StreamInterrupted(UpstreamUnavailable("down"), chunks_delivered=2, chars_delivered=9),
            503,
            "server_error",
            "api_error",
        ),
        (GatewayError("boom"), 500, "server_error", "api_error"),
    ],
)
def test_each_error_in_each_apis_shape(
    error: GatewayError, status: int, openai_type: str, anthropic_type: str
) -> None:
    assert http_status(error) == status
    assert openai_error(error, status)["type"] == openai_type
    assert anthropic_error(error, status, "r1")["error"]["type"] == anthropic_type
    assert anthropic_error(error, status, "r1")["request_id"] == "r1"


def test_the_headers_say_when_to_come_back_and_whether_to_retry() -> None:
    limited = RateLimited("slow", retry_after=1.2, subject="k", quota="q")
    assert dict(error_headers(limited, 429)) == {b"retry-after": b"2", b"retry-after-ms": b"1200"}
    budget = BudgetExceeded("spent", retry_after=10, subject="k", quota="q")
    assert dict(error_headers(budget, 429))[b"x-should-retry"] == b"false"
    assert dict(error_headers(UpstreamUnavailable("down"), 503)) == {b"x-should-retry": b"false"}
    assert dict(error_headers(Draining("bye"), 503)) == {b"x-should-retry": b"true"}
    assert error_headers(InvalidRequest("a", "b"), 400) == []
    codes = {
        openai_error(limited, 429)["code"],
        openai_error(Unauthenticated("x"), 401)["code"],
        openai_error(InvalidRequest("a", "b"), 400)["param"],
    }
    assert codes == {"rate_limit_exceeded", "invalid_api_key", "a"}

"""The Ollama adapter on `/api/chat`'s documented examples (tests/fixtures/README.md)."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from ai_service.errors import UpstreamNotFound, UpstreamUnavailable
from ai_service.providers.base import Deployment
from ai_service.providers.ollama import (
    OllamaProvider,
    created_seconds,
    request_body,
    response_from_ollama,
)
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    EmbedRequest,
    FunctionDefinition,
    Message,
    ReasoningConfig,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from tests.fixtures import RecordedHttp, load_bytes, load_json, settings

DEPLOYMENT = Deployment("ollama-docs", "llama3.2")


def weather_request() -> ChatCompletionRequest:
    documented = load_json("ollama/chat_request_tools.json")
    function = documented["tools"][0]["function"]
    return ChatCompletionRequest(
        model="llama",
        messages=[Message(role="user", content="What is the weather today in Paris?")],
        tools=[
            Tool(
                type="function",
                function=FunctionDefinition(
                    name=function["name"],
                    description=function["description"],
                    parameters_json=orjson.dumps(function["parameters"]).decode(),
                ),
            )
        ],
    )


def test_request_is_the_documented_tool_request() -> None:
    body = request_body(weather_request(), "llama3.2", stream=False)
    assert body == load_json("ollama/chat_request_tools.json")


def test_sampling_parameters_go_in_options_and_json_format() -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")],
        max_tokens=20,
        temperature=0.0,
        top_p=0.9,
        seed=42,
        stop=["\n\n"],
        presence_penalty=0.5,
        response_format=ResponseFormat(type="json_object"),
    )
    body = request_body(request, "llama3.2", stream=True)
    assert body["stream"] is True
    assert body["format"] == "json"
    assert body["options"] == {
        "temperature": 0.0,
        "top_p": 0.9,
        "seed": 42,
        "presence_penalty": 0.5,
        "num_predict": 20,
        "stop": ["\n\n"],
    }
    request.response_format.CopyFrom(
        ResponseFormat(type="json_schema", json_schema='{"type": "object"}')
    )
    assert request_body(request, "m", stream=False)["format"] == {"type": "object"}


def test_tool_round_trip_sends_arguments_as_an_object_and_the_tool_name() -> None:
    request = weather_request()
    call = ToolCall(id="call_1", type="function")
    call.function.name = "get_current_weather"
    call.function.arguments = '{"format":"celsius","location":"Paris, FR"}'
    request.messages.append(Message(role="assistant", tool_calls=[call]))
    request.messages.append(Message(role="tool", tool_call_id="call_1", content="22 degrees"))
    messages = request_body(request, "m", stream=False)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "function": {
                    "name": "get_current_weather",
                    "arguments": {"format": "celsius", "location": "Paris, FR"},
                }
            }
        ],
    }
    assert messages[2] == {
        "role": "tool",
        "content": "22 degrees",
        "tool_name": "get_current_weather",
    }


@pytest.mark.parametrize(
    ("choice", "names"),
    [
        (ToolChoice(mode="none"), None),
        (ToolChoice(function="get_current_weather"), ["get_current_weather"]),
        (ToolChoice(mode="auto"), ["get_current_weather", "other"]),
    ],
)
def test_tool_choice_narrows_the_tools(choice: ToolChoice, names: list[str] | None) -> None:
    request = weather_request()
    request.tools.add(type="function", function=FunctionDefinition(name="other"))
    request.tool_choice.CopyFrom(choice)
    tools = request_body(request, "m", stream=False).get("tools")
    assert (None if tools is None else [t["function"]["name"] for t in tools]) == names


def test_documented_response() -> None:
    response = response_from_ollama(load_json("ollama/chat_response.json"))
    assert response.choices[0].message.content == "Hello! How are you today?"
    assert response.choices[0].finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (26, 298)
    assert response.usage.total_tokens == 324
    assert response.model == "llama3.2"
    assert response.created == 1702390423  # 2023-12-12T14:13:43Z
    assert response.id.startswith("ollama-")


def test_documented_tool_call_response() -> None:
    response = response_from_ollama(load_json("ollama/chat_response_tools.json"))
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"  # Ollama says "stop"; the service says why
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_")
    assert call.function.name == "get_current_weather"
    assert orjson.loads(call.function.arguments) == {"format": "celsius", "location": "Paris, FR"}
    assert response.usage.completion_tokens == 33


def test_done_reason_length_is_finish_reason_length() -> None:
    payload = load_json("ollama/chat_response.json")
    payload["done_reason"] = "length"
    assert response_from_ollama(payload).choices[0].finish_reason == "length"


def test_created_at_with_nanoseconds_and_an_offset() -> None:
    assert created_seconds("2023-08-04T08:52:19.385406455-07:00") == 1691164339
    assert created_seconds("2023-08-04T15:52:19Z") == 1691164339
    assert created_seconds("garbage") == 0


async def stream_of(body: bytes, **fields: Any) -> list[ChatCompletionChunk]:
    provider = OllamaProvider(settings("ollama", **fields), RecordedHttp(body))
    return [c async for c in provider.stream(ChatCompletionRequest(), DEPLOYMENT)]


async def test_documented_stream() -> None:
    chunks = await stream_of(load_bytes("ollama/chat_stream.ndjson"))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content for c in chunks) == "The sky is blue."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (26, 282)
    assert all(not c.HasField("usage") for c in chunks[:-1])
    assert {c.id for c in chunks} == {chunks[0].id}


async def test_streamed_tool_call_arrives_whole() -> None:
    final = load_json("ollama/chat_response_tools.json")
    line = {**final, "done": False}
    for key in ("done_reason", "total_duration", "prompt_eval_count", "eval_count"):
        line.pop(key)
    done = {**final, "message": {"role": "assistant", "content": ""}}
    chunks = await stream_of(orjson.dumps(line) + b"\n" + orjson.dumps(done) + b"\n")
    (piece,) = [d for c in chunks for d in c.choices[0].delta.tool_calls]
    assert (piece.index, piece.type, piece.function.name) == (0, "function", "get_current_weather")
    assert piece.id.startswith("call_")
    assert orjson.loads(piece.function.arguments) == {"format": "celsius", "location": "Paris, FR"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_stream_without_done_is_unavailable() -> None:
    body = b"\n".join(load_bytes("ollama/chat_stream.ndjson").splitlines()[:-1])
    with pytest.raises(UpstreamUnavailable, match="without done"):
        await stream_of(body)


async def test_error_line_mid_stream_is_unavailable() -> None:
    first = load_bytes("ollama/chat_stream.ndjson").splitlines()[0]
    with pytest.raises(UpstreamUnavailable, match="out of memory"):
        await stream_of(first + b'\n{"error": "out of memory"}\n')


async def test_model_not_found_in_ollamas_error_shape() -> None:
    body = b'{"error": "model \\"llama9\\" not found, try pulling it first"}'
    http = RecordedHttp(body, status=404)
    provider = OllamaProvider(settings("ollama", api_key="ollama-secret"), http)
    with pytest.raises(UpstreamNotFound, match="try pulling it first"):
        await provider.complete(ChatCompletionRequest(), DEPLOYMENT)
    url, sent, headers = http.sent[0]
    assert url == "http://upstream.invalid/api/chat"
    assert sent["stream"] is False
    assert headers["authorization"] == "Bearer ollama-secret"


def provider_on(http: RecordedHttp) -> OllamaProvider:
    """The adapter, its upstream answering with `http`'s recorded body."""
    return OllamaProvider(settings("ollama"), http)


def thinking_request(include_text: bool | None) -> ChatCompletionRequest:
    reasoning = ReasoningConfig(effort="low")
    if include_text is not None:
        reasoning.include_text = include_text
    return ChatCompletionRequest(
        messages=[Message(role="user", content="How many r's in strawberry?")],
        reasoning=reasoning,
    )


@pytest.mark.parametrize(
    ("include_text", "reasoning"),
    [
        (None, ["Count r's: s-t-r-a-w-b-e-r-r-y ..."]),
        (True, ["Count r's: s-t-r-a-w-b-e-r-r-y ..."]),
        (False, []),
    ],
)
async def test_the_answers_thinking_is_dropped_only_when_include_text_is_false(
    include_text: bool | None, reasoning: list[str]
) -> None:
    http = RecordedHttp(load_bytes("ollama/chat_response_thinking.json"))
    provider = provider_on(http)
    response = await provider.complete(thinking_request(include_text), DEPLOYMENT)
    assert [block.text for block in response.choices[0].message.reasoning] == reasoning
    assert response.choices[0].message.content == "There are 3."


async def test_a_stream_is_asked_for_with_stream_true() -> None:
    http = RecordedHttp(load_bytes("ollama/chat_stream.ndjson"))
    provider = provider_on(http)
    request = ChatCompletionRequest(messages=[Message(role="user", content="Why is the sky blue?")])
    assert [c async for c in provider.stream(request, DEPLOYMENT)]
    ((url, sent, headers),) = http.sent
    assert url == "http://upstream.invalid/api/chat"
    assert sent == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "stream": True,
    }
    assert headers["accept"] == "application/x-ndjson"


def test_a_text_format_sends_no_format_even_with_a_schema() -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")],
        response_format=ResponseFormat(type="text", json_schema='{"type": "object"}'),
    )
    assert "format" not in request_body(request, "llama3.2", stream=False)


def test_a_tool_result_for_a_call_not_in_the_conversation_has_no_tool_name() -> None:
    request = ChatCompletionRequest(
        messages=[
            Message(role="user", content="What is the weather today in Paris?"),
            Message(role="tool", tool_call_id="call_gone", content="22 degrees"),
        ]
    )
    messages = request_body(request, "llama3.2", stream=False)["messages"]
    assert messages[1] == {"role": "tool", "content": "22 degrees"}


def test_a_named_function_drops_the_tools_listed_before_it() -> None:
    request = weather_request()
    tools = [Tool(type="function", function=FunctionDefinition(name="a_first_tool"))]
    tools += request.tools
    del request.tools[:]
    request.tools.extend(tools)
    request.tool_choice.CopyFrom(ToolChoice(function="get_current_weather"))
    body = request_body(request, "llama3.2", stream=False)
    assert body["tools"] == load_json("ollama/chat_request_tools.json")["tools"]


def test_made_up_ids_are_a_prefix_and_24_hex_digits() -> None:
    response = response_from_ollama(load_json("ollama/chat_response_tools.json"))
    assert re.fullmatch(r"ollama-[0-9a-f]{24}", response.id)
    assert re.fullmatch(r"call_[0-9a-f]{24}", response.choices[0].message.tool_calls[0].id)


def test_created_at_without_an_offset_is_utc() -> None:
    assert created_seconds("2023-08-04T15:52:19") == 1691164339
    assert created_seconds("2023-08-04T15:52:19.385406455") == 1691164339


async def test_an_answer_cut_at_num_predict_is_finish_reason_length() -> None:
    body = load_bytes("ollama/chat_response_thinking.json").replace(
        b'"done_reason": "stop"', b'"done_reason": "length"'
    )
    provider = provider_on(RecordedHttp(body))
    response = await provider.complete(ChatCompletionRequest(), DEPLOYMENT)
    assert response.choices[0].finish_reason == "length"


def test_the_one_choice_is_index_0() -> None:
    response = response_from_ollama(load_json("ollama/chat_response.json"))
    assert [choice.index for choice in response.choices] == [0]


def without_counts(payload: dict[str, Any]) -> dict[str, Any]:
    """Ollama leaves `prompt_eval_count` (and `eval_count`) out when zero, e.g. for a prompt
    it took whole from its cache (ollama/ollama#2068, #3427)."""
    return {k: v for k, v in payload.items() if k not in ("prompt_eval_count", "eval_count")}


def test_counts_ollama_leaves_out_are_zero_tokens() -> None:
    response = response_from_ollama(without_counts(load_json("ollama/chat_response.json")))
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (0, 0, 0)


async def test_a_stream_whose_last_line_has_no_counts_reports_zero_tokens() -> None:
    *lines, last = load_bytes("ollama/chat_stream.ndjson").splitlines()
    done = orjson.dumps(without_counts(orjson.loads(last)))
    chunks = await stream_of(b"\n".join([*lines, done]) + b"\n")
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (0, 0, 0)


async def test_stream_chunks_carry_the_model_and_the_role_once() -> None:
    chunks = await stream_of(load_bytes("ollama/chat_stream.ndjson"))
    assert {c.model for c in chunks} == {"llama3.2"}
    assert [c.choices[0].delta.role for c in chunks if c.choices[0].delta.role] == ["assistant"]
    assert chunks[0].choices[0].delta.role == "assistant"


async def test_streamed_thinking_is_reasoning_block_0() -> None:
    http = RecordedHttp(load_bytes("ollama/chat_stream_thinking.ndjson"))
    provider = provider_on(http)
    chunks = [c async for c in provider.stream(thinking_request(None), DEPLOYMENT)]
    pieces = [(d.index, d.text) for c in chunks for d in c.choices[0].delta.reasoning]
    assert pieces == [(0, "Let me"), (0, " count")]


async def test_two_streamed_tool_calls_are_indexed_0_and_1() -> None:
    final = load_json("ollama/chat_response_tools.json")
    (paris,) = final["message"]["tool_calls"]
    london = {"function": {"name": "get_current_weather", "arguments": {"location": "London, UK"}}}
    first = {"model": "llama3.2", "created_at": final["created_at"], "done": False}
    lines = [
        {**first, "message": {"role": "assistant", "content": "", "tool_calls": [paris]}},
        {**first, "message": {"role": "assistant", "content": "", "tool_calls": [london]}},
        {**final, "message": {"role": "assistant", "content": ""}},
    ]
    chunks = await stream_of(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    pieces = [d for c in chunks for d in c.choices[0].delta.tool_calls]
    assert [(p.index, orjson.loads(p.function.arguments)) for p in pieces] == [
        (0, {"format": "celsius", "location": "Paris, FR"}),
        (1, {"location": "London, UK"}),
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_only_a_json_true_done_ends_the_stream() -> None:
    first, *rest = load_bytes("ollama/chat_stream.ndjson").splitlines()
    not_done = first.replace(b'"done": false', b'"done": 1')
    chunks = await stream_of(b"\n".join([not_done, *rest]) + b"\n")
    assert "".join(c.choices[0].delta.content for c in chunks) == "The sky is blue."
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]


async def test_embed_answer_names_its_model_and_counts_left_out_are_zero() -> None:
    documented = load_json("ollama/embed_response.json")
    request = EmbedRequest(inputs=["Why is the sky blue?", "Why is the grass green?"])
    deployment = Deployment("ollama-docs", "all-minilm")
    for payload, tokens in ((documented, 8), (without_counts(documented), 0)):
        provider = provider_on(RecordedHttp(orjson.dumps(payload)))
        response = await provider.embed(request, deployment)
        assert response.model == "all-minilm"
        assert (response.usage.prompt_tokens, response.usage.total_tokens) == (tokens, tokens)

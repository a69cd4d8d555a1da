"""The client's OpenAI-shaped face and its typed errors, against a real gateway and simulator.

`chat.completions.create(...)` and `models.list()` on both clients, with dicts and proto
messages; every error subclass provoked for real (a wrong key, a model the key may not
use, bad fields, a low rate limit, simulator faults, an upstream nobody listens on).
The sync client blocks, so it runs in a worker thread while this loop serves the gateway.
"""

from __future__ import annotations

import asyncio
import json
import pickle
from typing import Any

import grpc
import pytest

from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import (
    AIClient,
    AIServiceError,
    AsyncAIClient,
    AuthenticationError,
    BadRequestError,
    CallCancelledError,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatParams,
    DeadlineExceededError,
    FunctionDefinition,
    InternalError,
    Message,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestOptions,
    ResponseFormat,
    StreamInterruptedError,
    Tool,
    ToolChoice,
    UnavailableError,
    build_chat_request,
)
from ai_service_client._errors import error_for
from ai_service_client._params import chat_request
from tests.conftest import (
    PROVIDER_KEY_REF,
    RESTRICTED_KEY,
    TEST_KEY,
    StartGateway,
    free_port,
)

MODEL = "sim-gpt"
HELLO = [{"role": "user", "content": "hello"}]
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


async def streamed_text(stream: Any) -> tuple[str, list[ChatCompletionChunk]]:
    chunks = [chunk async for chunk in stream]
    return "".join(c.delta.content for chunk in chunks for c in chunk.choices), chunks


# --- the facade -----------------------------------------------------------------------------


async def test_create_sends_dict_messages_and_params_and_returns_the_proto(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    response = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "be brief"}, *HELLO],
        temperature=0.25,
        top_p=0.5,
        max_tokens=50,
        stop="STOP",
        seed=7,
        user="user-1",
        presence_penalty=0.5,
        frequency_penalty=0.25,
        response_format={"type": "json_object"},
    )
    assert isinstance(response, ChatCompletionResponse)
    assert response.choices[0].message.content == "You said: hello"
    assert response.usage.total_tokens > 0
    body = simulator.stats.received[-1].body
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    ]
    assert (body["temperature"], body["top_p"], body["max_completion_tokens"]) == (0.25, 0.5, 50)
    assert (body["stop"], body["seed"], body["user"]) == (["STOP"], 7, "user-1")
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, 0.25)
    assert body["response_format"] == {"type": "json_object"}


async def test_create_takes_proto_messages_and_a_mix(client: AsyncAIClient) -> None:
    response = await client.chat.completions.create(
        model=MODEL,
        messages=[Message(role="system", content="be brief"), {"role": "user", "content": "hi"}],
    )
    assert response.choices[0].message.content == "You said: hi"


async def test_create_streams_chunks_when_asked(client: AsyncAIClient) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=[Message(role="user", content="one two three")], stream=True
    )
    async with stream:
        text, chunks = await streamed_text(stream)
    assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    assert [chunk.sequence for chunk in chunks] == list(range(len(chunks)))
    assert text == "You said: one two three"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_create_with_openai_tools_and_the_tool_result_turn(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    question = {"role": "user", "content": "what is the weather in city Paris"}
    response = await client.chat.completions.create(
        model=MODEL,
        messages=[question],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    body = simulator.stats.received[-1].body
    assert body["tools"][0]["function"]["parameters"] == WEATHER["function"]["parameters"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}

    # The next turn: the assistant's proto message as returned, then the tool's answer.
    follow = await client.chat.completions.create(
        model=MODEL,
        messages=[
            question,
            choice.message,
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
        tools=[WEATHER],
        tool_choice="auto",
    )
    assert follow.choices[0].message.content == "Tool result received: sunny"


async def test_create_streams_a_tool_call(client: AsyncAIClient) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "weather in city Oslo"}],
        tools=[WEATHER],
        stream=True,
    )
    arguments = ""
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls:
                arguments += delta.function.arguments
    assert json.loads(arguments) == {"city": "Oslo"}


async def test_create_passes_a_json_schema_response_format(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    await client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": schema, "strict": True},
        },
    )
    assert simulator.stats.received[-1].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": schema, "strict": True},
    }


async def test_an_unknown_parameter_raises_type_error_and_sends_nothing(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    with pytest.raises(TypeError, match="unknown chat completion parameter 'n'"):
        await client.chat.completions.create(model=MODEL, messages=HELLO, n=2)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"messages\[0\]: .*no field named \"contnt\""):
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "contnt": "x"}]
        )
    with pytest.raises(TypeError, match="temperature: "):
        await client.chat.completions.create(model=MODEL, messages=HELLO, temperature="hot")  # type: ignore[call-overload]
    assert simulator.stats.total_requests == 0


async def test_metadata_and_timeout_keep_their_meaning(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    # `metadata=` is the call's gRPC metadata: here it replaces the client's key.
    with pytest.raises(AuthenticationError):
        await client.chat.completions.create(
            model=MODEL, messages=HELLO, metadata={"authorization": "Bearer wrong-key"}
        )
    assert simulator.stats.total_requests == 0
    response = await client.chat.completions.create(model=MODEL, messages=HELLO, timeout=None)
    assert response.choices


async def test_models_list(gateway: Gateway) -> None:
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as ai:
        assert {model.id for model in await ai.models.list()} == {"sim-gpt", "sim-other"}
    async with AsyncAIClient(gateway.address, RESTRICTED_KEY, timeout=10) as ai:
        assert [model.id for model in await ai.models.list()] == ["sim-gpt"]


async def test_the_sync_client_has_the_same_face(gateway: Gateway) -> None:
    def run() -> tuple[ChatCompletionResponse, str, list[str], BadRequestError]:
        with AIClient(gateway.address, TEST_KEY, timeout=10) as ai:
            response = ai.chat.completions.create(model=MODEL, messages=HELLO)
            with ai.chat.completions.create(
                model=MODEL, messages=[Message(role="user", content="a b")], stream=True
            ) as stream:
                text = "".join(c.delta.content for chunk in stream for c in chunk.choices)
            models = [model.id for model in ai.models.list()]
            try:
                ai.chat.completions.create(model=MODEL, messages=HELLO, temperature=5)
            except BadRequestError as error:
                return response, text, models, error
        raise AssertionError("temperature=5 was accepted")

    response, text, models, error = await asyncio.to_thread(run)
    assert response.choices[0].message.content == "You said: hello"
    assert text == "You said: a b"
    assert set(models) == {"sim-gpt", "sim-other"}
    assert error.field_violations[0][0] == "temperature"


async def test_the_existing_api_is_unchanged(client: AsyncAIClient) -> None:
    request = build_chat_request("hello", model=MODEL, tools=[WEATHER], tool_choice="none")
    response = await client.chat(request, timeout=10)
    assert response.choices[0].message.content == "You said: hello"
    assert await client.ask("hi", model=MODEL) == "You said: hi"
    assert [model.id for model in await client.list_models()]


def test_every_request_field_is_a_parameter() -> None:
    # The proto is the contract: a field added there must be reachable from create().
    names = {"model", "messages", *ChatParams.__annotations__}
    fields = set(ChatCompletionRequest.DESCRIPTOR.fields_by_name)
    assert {"metadata" if name == "request_metadata" else name for name in names} == fields

    dicts = chat_request(
        MODEL,
        HELLO,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=5,
        temperature=0.0,
        top_p=0.5,
        stop=["a", "b"],
        seed=3,
        user="u",
        request_metadata={"team": "search"},
        presence_penalty=0.5,
        frequency_penalty=0.25,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": {}}},
        options={"bypass_cache": True, "cache_ttl_seconds": 60},
    )
    protos = ChatCompletionRequest(
        model=MODEL,
        messages=[Message(role="user", content="hello")],
        tools=[
            Tool(
                type="function",
                function=FunctionDefinition(
                    name="get_weather",
                    description="The weather in a city.",
                    parameters_json=json.dumps(WEATHER["function"]["parameters"]),
                ),
            )
        ],
        tool_choice=ToolChoice(function="get_weather"),
        max_tokens=5,
        temperature=0.0,
        top_p=0.5,
        stop=["a", "b"],
        seed=3,
        user="u",
        metadata={"team": "search"},
        presence_penalty=0.5,
        frequency_penalty=0.25,
        response_format=ResponseFormat(type="json_schema", schema_name="r", json_schema="{}"),
        options=RequestOptions(bypass_cache=True, cache_ttl_seconds=60),
    )
    assert dicts == protos


# --- typed errors, provoked for real ----------------------------------------------------------


async def test_a_wrong_key_is_an_authentication_error(
    gateway: Gateway, simulator: Simulator
) -> None:
    async with AsyncAIClient(gateway.address, "wrong-key-0123456789", timeout=10) as ai:
        with pytest.raises(AuthenticationError) as caught:
            await ai.chat.completions.create(model=MODEL, messages=HELLO)
        with pytest.raises(AuthenticationError):
            await ai.models.list()
    error = caught.value
    assert isinstance(error, AIServiceError)
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert simulator.stats.total_requests == 0


async def test_a_model_the_key_may_not_use_is_permission_denied(gateway: Gateway) -> None:
    async with AsyncAIClient(gateway.address, RESTRICTED_KEY, timeout=10) as ai:
        with pytest.raises(PermissionDeniedError) as caught:
            await ai.chat.completions.create(model="sim-other", messages=HELLO)
    assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.reason == "MODEL_NOT_ALLOWED"


async def test_an_unknown_model_is_not_found(client: AsyncAIClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        await client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert caught.value.code is grpc.StatusCode.NOT_FOUND


async def test_a_bad_field_is_a_bad_request_naming_it(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    with pytest.raises(BadRequestError) as caught:
        await client.chat.completions.create(model=MODEL, messages=HELLO, temperature=5)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in caught.value.field_violations] == ["temperature"]
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "bot", "content": "x"}], stream=True
    )
    with pytest.raises(BadRequestError) as caught:
        await streamed_text(stream)
    assert [field for field, _ in caught.value.field_violations] == ["messages[0].role"]
    assert simulator.stats.total_requests == 0


async def test_over_the_rate_limit_is_a_rate_limit_error_with_retry_after(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(rate_limit={"requests_per_minute": 1})
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as ai:
        assert (await ai.chat.completions.create(model=MODEL, messages=HELLO)).choices
        with pytest.raises(RateLimitError) as caught:
            await ai.chat.completions.create(model=MODEL, messages=HELLO)
    error = caught.value
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.retry_after is not None and error.retry_after > 0
    assert error.quota_violations
    # A process pool sends errors back pickled: the class and the details survive.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RateLimitError
    assert (copy.retry_after, copy.reason, str(copy)) == (
        error.retry_after,
        error.reason,
        str(error),
    )


async def test_a_slow_upstream_is_deadline_exceeded(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    simulator.add_fault(FaultRule("latency", seconds=30))
    with pytest.raises(DeadlineExceededError) as caught:
        await client.chat.completions.create(model=MODEL, messages=HELLO, timeout=0.5)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    stream = await client.chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, timeout=0.5
    )
    with pytest.raises(DeadlineExceededError):
        await streamed_text(stream)


async def test_a_stream_cut_mid_way_is_stream_interrupted_with_the_count(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    simulator.config.tokens_per_second = 200  # events arrive one by one
    simulator.add_fault(FaultRule("cut", after_chunks=8))
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "/tokens 40 go"}], stream=True
    )
    received = []
    with pytest.raises(StreamInterruptedError) as caught:
        async for chunk in stream:
            received.append(chunk)
    error = caught.value
    assert received
    assert error.chunks_delivered == len(received)
    assert error.chars_delivered is not None and error.chars_delivered > 0
    assert error.cause == "UPSTREAM_UNAVAILABLE"
    # Also the error for its status, so a handler for UNAVAILABLE catches it.
    assert isinstance(error, UnavailableError)
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert error.reason == "STREAM_INTERRUPTED"
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, StreamInterruptedError) and isinstance(copy, UnavailableError)
    assert copy.chunks_delivered == len(received)


async def test_an_upstream_nobody_listens_on_is_unavailable(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    down = {
        "name": "simulator",
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{free_port()}/v1",
        "api_key": PROVIDER_KEY_REF,
    }
    gateway = await start_gateway(providers=[down])
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as ai:
        with pytest.raises(UnavailableError) as caught:
            await ai.chat.completions.create(model=MODEL, messages=HELLO)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert not isinstance(caught.value, StreamInterruptedError)


async def test_a_refused_provider_key_is_an_internal_error(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    simulator.add_fault(FaultRule("status", status=401))
    with pytest.raises(InternalError) as caught:
        await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert caught.value.reason == "UPSTREAM_AUTH"


async def test_closing_the_client_mid_call_is_call_cancelled(
    gateway: Gateway, simulator: Simulator
) -> None:
    simulator.add_fault(FaultRule("latency", seconds=30))
    ai = AsyncAIClient(gateway.address, TEST_KEY, timeout=10)
    call = asyncio.ensure_future(ai.chat.completions.create(model=MODEL, messages=HELLO))
    for _ in range(1000):  # until the call is at the upstream
        if simulator.stats.total_requests:
            break
        await asyncio.sleep(0.01)
    assert simulator.stats.total_requests == 1
    await ai.close()
    with pytest.raises(CallCancelledError) as caught:
        await call
    assert caught.value.code is grpc.StatusCode.CANCELLED


def test_a_timeout_that_cuts_a_stream_is_both_classes() -> None:
    # The gateway sends STREAM_INTERRUPTED with DEADLINE_EXCEEDED when a timeout cut the
    # stream; which side's deadline fires first is a race, so this is the mapping alone.
    error = error_for(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "stream interrupted after 3 chunks",
        reason="STREAM_INTERRUPTED",
        error_metadata={"chunks_delivered": "3"},
    )
    assert isinstance(error, StreamInterruptedError)
    assert isinstance(error, DeadlineExceededError)
    assert not isinstance(error, UnavailableError)
    assert error.chunks_delivered == 3
    assert (
        repr(error)
        == "StreamInterruptedError(DEADLINE_EXCEEDED, 'stream interrupted after 3 chunks')"
    )
    assert type(error_for(grpc.StatusCode.ABORTED, "x")) is AIServiceError

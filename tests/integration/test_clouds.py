"""The conformance matrix of the cloud adapters, end to end: the real gateway, the real
simulator speaking Azure OpenAI (both URL forms), the Gemini API, Vertex AI (Gemini and
Claude) and Bedrock at once, checking each credential it receives, and a client that
changes only the `model` name.

Rows: text, system, tools, tool results, streaming, stop, max_tokens/length, usage, content
filters, errors (400, 401, 403, 404, 429, 5xx, a reset, a malformed body, a cut, an error
mid-stream) and cancellation closing the upstream; each on every cloud model.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from ai_service.config import parse_config
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from ai_service_protos.ai_service_pb2 import ToolChoice
from tests.clouds import (
    CLOUD_ENV,
    CLOUD_MODELS,
    cloud_models,
    cloud_providers,
    service_account_file,
)
from tests.conftest import PROVIDER_SECRET, TEST_KEY, StartGateway, config_tree
from tests.integration.test_provider_e2e import (
    ASKED_WEATHER,
    WEATHER,
    WEATHER_WIRE,
    ask,
    assemble_tool_call,
    planned_prompt_tokens,
    streamed,
    text_of,
    weather_call_and_result,
)

each_model = pytest.mark.parametrize("model", list(CLOUD_MODELS))
each_mode = pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
#: The models whose simulated API answers `/filter` (Claude on Vertex has no filter of its own).
FILTERING = [name for name in CLOUD_MODELS if name != "sim-vertex-claude"]


def clouds_tree(simulator: Simulator, folder: Path) -> dict[str, Any]:
    tree = config_tree(simulator.base_url)
    tree["providers"] += cloud_providers(
        simulator.base_url, service_account_file(folder, simulator)
    )
    tree["models"] += cloud_models()
    # Translation and error mapping: one attempt per call, so a 429's wait is reported.
    tree["resilience"] = {"retries": {"max_attempts": 1}}
    return tree


@pytest.fixture
async def gateway(start_gateway: StartGateway, simulator: Simulator, tmp_path: Path) -> Gateway:
    return await start_gateway(parse_config(clouds_tree(simulator, tmp_path), env=CLOUD_ENV))


@pytest.fixture
async def client(gateway: Gateway) -> Any:
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as c:
        yield c


async def answer(client: AsyncAIClient, request: ChatCompletionRequest, stream: bool) -> Any:
    """(text, finish reason, usage, tool calls) of the unary answer or the assembled stream."""
    if not stream:
        response = await client.chat(request)
        choice = response.choices[0]
        return choice.message.content, choice.finish_reason, response.usage, choice.message
    chunks = await streamed(client, request)
    return text_of(chunks), chunks[-1].choices[0].finish_reason, chunks[-1].usage, chunks


# --- text, system, usage, streaming --------------------------------------------------------


@each_model
async def test_unary_answer_with_system_prompt_and_usage(
    client: AsyncAIClient, simulator: Simulator, model: str
) -> None:
    request = ask(model, "hello gateway")
    request.messages.insert(0, Message(role="system", content="be brief"))
    response = await client.chat(request)

    assert simulator.stats.received[-1].path.startswith(CLOUD_MODELS[model].path.split("{")[0])
    choice = response.choices[0]
    assert (choice.message.role, choice.message.content) == ("assistant", "You said: hello gateway")
    assert choice.finish_reason == "stop"
    assert response.usage.prompt_tokens == planned_prompt_tokens(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello gateway"}]
    )
    assert response.usage.completion_tokens == 4
    assert response.usage.total_tokens == response.usage.prompt_tokens + 4
    assert response.id and response.model


@each_model
async def test_a_stream_says_what_the_unary_answer_says_and_ends_with_finish_and_usage(
    client: AsyncAIClient, model: str
) -> None:
    request = ask(model, "/tokens 40 stream me")
    unary = await client.chat(request)
    chunks = await streamed(client, request)

    assert text_of(chunks) == unary.choices[0].message.content
    assert len(text_of(chunks).split()) == 40
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage == unary.usage
    assert all(not c.HasField("usage") for c in chunks[:-1])
    assert {c.id for c in chunks} == {chunks[0].id}


# --- tools and tool results ----------------------------------------------------------------


@each_model
@each_mode
async def test_tool_call_and_its_result_round_trip(
    client: AsyncAIClient, model: str, stream: bool
) -> None:
    request = ChatCompletionRequest(
        model=model,
        messages=[Message(role="user", content="weather in city Paris please")],
        tools=[WEATHER],
        tool_choice=ToolChoice(mode="auto"),
    )
    if stream:
        chunks = await streamed(client, request)
        call, finish, usage = (
            assemble_tool_call(chunks),
            chunks[-1].choices[0].finish_reason,
            chunks[-1].usage,
        )
    else:
        response = await client.chat(request)
        call, finish = response.choices[0].message.tool_calls[0], response.choices[0].finish_reason
        usage = response.usage
    assert finish == "tool_calls"
    assert (call.type, call.function.name) == ("function", "get_weather")
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id  # made up where the API sends none (Gemini)
    assert usage.prompt_tokens == planned_prompt_tokens([ASKED_WEATHER], [WEATHER_WIRE])

    request.messages.append(Message(role="assistant", tool_calls=[call]))
    request.messages.append(Message(role="tool", tool_call_id=call.id, content="18C and sunny"))
    reply = await client.chat(request)
    assert reply.choices[0].message.content == "Tool result received: 18C and sunny"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == planned_prompt_tokens(
        [ASKED_WEATHER, *weather_call_and_result(call)], [WEATHER_WIRE]
    )


@pytest.mark.parametrize("model", ["sim-gemini", "sim-vertex"])
async def test_a_tool_result_for_no_earlier_call_is_refused_before_any_upstream_call(
    client: AsyncAIClient, simulator: Simulator, model: str
) -> None:
    # Gemini names a function response by the function's name, found from the call's id.
    request = ask(model, "hi")
    request.messages.append(Message(role="tool", tool_call_id="call_unknown", content="x"))
    before = simulator.stats.total_requests
    with pytest.raises(AIServiceError) as caught:
        await client.chat(request)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "messages[1].tool_call_id" in caught.value.message
    assert simulator.stats.total_requests == before


# --- stop and max_tokens -------------------------------------------------------------------


@each_model
@each_mode
async def test_a_stop_sequence_cuts_the_answer(
    client: AsyncAIClient, model: str, stream: bool
) -> None:
    text, finish, _, _ = await answer(
        client, ask(model, "alpha beta gamma delta", stop=["gamma"]), stream
    )
    assert (text, finish) == ("You said: alpha beta ", "stop")


@each_model
@each_mode
async def test_max_tokens_truncates_with_finish_reason_length(
    client: AsyncAIClient, model: str, stream: bool
) -> None:
    text, finish, usage, _ = await answer(
        client, ask(model, "/tokens 30 long", max_tokens=7), stream
    )
    assert len(text.split()) == 7
    assert finish == "length"
    assert (usage.completion_tokens, usage.total_tokens) == (7, usage.prompt_tokens + 7)


# --- content filters -----------------------------------------------------------------------


@pytest.mark.parametrize("model", FILTERING)
@each_mode
async def test_an_answer_the_providers_filter_stopped_ends_content_filter(
    client: AsyncAIClient, model: str, stream: bool
) -> None:
    text, finish, _, _ = await answer(client, ask(model, "/filter answer now"), stream)
    assert (text, finish) == ("", "content_filter")


@pytest.mark.parametrize("model", ["sim-gemini", "sim-vertex", "sim-bedrock"])
@each_mode
async def test_a_prompt_the_providers_filter_blocked_ends_content_filter(
    client: AsyncAIClient, model: str, stream: bool
) -> None:
    # Gemini blocks with promptFeedback and no candidates; Bedrock's guardrail answers its
    # canned text.
    text, finish, _, _ = await answer(client, ask(model, "/filter prompt now"), stream)
    assert finish == "content_filter"
    assert text == (
        "Sorry, the model cannot answer this question." if model == "sim-bedrock" else ""
    )


@pytest.mark.parametrize("model", ["sim-azure", "sim-azure-entra"])
@each_mode
async def test_a_prompt_azures_filter_stopped_is_invalid_naming_the_categories(
    client: AsyncAIClient, model: str, stream: bool
) -> None:
    with pytest.raises(AIServiceError) as caught:
        await answer(client, ask(model, "/filter prompt now"), stream)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "content filter (jailbreak)" in caught.value.message


# --- errors --------------------------------------------------------------------------------

ERROR_CASES = [
    (FaultRule("status", status=400, message="bad thing"), "INVALID_ARGUMENT"),
    (FaultRule("status", status=401), "INTERNAL"),
    (FaultRule("status", status=403), "INTERNAL"),
    (FaultRule("status", status=404), "NOT_FOUND"),
    (FaultRule("status", status=429, retry_after=7), "RESOURCE_EXHAUSTED"),
    (FaultRule("status", status=500), "UNAVAILABLE"),
    (FaultRule("status", status=503), "UNAVAILABLE"),
    (FaultRule("reset"), "UNAVAILABLE"),
    (FaultRule("malformed", after_chunks=0), "UNAVAILABLE"),
    (FaultRule("cut", after_chunks=0), "UNAVAILABLE"),
    (FaultRule("stream_error", status=429, after_chunks=0), "RESOURCE_EXHAUSTED"),
    (FaultRule("stream_error", status=503, after_chunks=0), "UNAVAILABLE"),
]


@each_model
@pytest.mark.parametrize(
    ("fault", "code"),
    ERROR_CASES,
    ids=[
        f"{f.kind}-{f.status}" if "status" in f.kind or "error" in f.kind else f.kind
        for f, _ in ERROR_CASES
    ],
)
@each_mode
async def test_each_error_class_maps_to_the_designed_status(
    client: AsyncAIClient,
    simulator: Simulator,
    model: str,
    fault: FaultRule,
    code: str,
    stream: bool,
) -> None:
    fault.model = CLOUD_MODELS[model].upstream
    simulator.add_fault(fault)
    with pytest.raises(AIServiceError) as caught:
        await answer(client, ask(model, "hello"), stream)
    error = caught.value
    if stream and fault.kind == "stream_error" and model.startswith("sim-azure"):
        code = "UNAVAILABLE"  # OpenAI's error event after the 200 carries no status
    assert error.code.name == code, error
    assert PROVIDER_SECRET not in str(error)
    if fault.message:
        assert "bad thing" in error.message
    simulator.clear_faults()
    if fault.status == 429 and fault.kind == "status":
        assert error.retry_after == pytest.approx(7.0)
        # The deployment cools down for its Retry-After: refused at once, not asked.
        asked = simulator.stats.total_requests
        with pytest.raises(AIServiceError) as cooling:
            await client.chat(ask(model, "hello"))
        assert cooling.value.reason == "UPSTREAM_RATE_LIMITED"
        assert simulator.stats.total_requests == asked
        return
    assert (await client.chat(ask(model, "hello"))).choices


@each_model
async def test_an_error_mid_stream_ends_unavailable_with_what_was_delivered(
    client: AsyncAIClient, simulator: Simulator, model: str
) -> None:
    simulator.config.tokens_per_second = 200  # events arrive one by one
    simulator.add_fault(
        FaultRule("stream_error", model=CLOUD_MODELS[model].upstream, status=500, after_chunks=8)
    )
    received = []
    with pytest.raises(AIServiceError) as caught:
        async for chunk in client.stream_chat(ask(model, "/tokens 40 go")):
            received.append(chunk)
    assert received
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == "STREAM_INTERRUPTED"
    assert caught.value.error_metadata["chunks_delivered"] == str(len(received))


# --- cancellation --------------------------------------------------------------------------


@each_model
async def test_a_cancelled_stream_closes_its_upstream_exchange(
    client: AsyncAIClient, simulator: Simulator, model: str
) -> None:
    simulator.config.tokens_per_second = 20
    upstream = CLOUD_MODELS[model].upstream
    async for chunk in client.stream_chat(ask(model, "/tokens 200 slowly")):
        if chunk.choices and chunk.choices[0].delta.content:
            break  # leaving the loop cancels the call
    for _ in range(1000):  # the simulator's record of the closed connection
        if any(d.model == upstream for d in simulator.stats.disconnects):
            break
        await asyncio.sleep(0.01)
    (gone,) = [d for d in simulator.stats.disconnects if d.model == upstream]
    assert gone.events_sent < 200

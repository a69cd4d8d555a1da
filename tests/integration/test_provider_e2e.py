"""Every provider kind end to end: the real gateway, the real simulator speaking OpenAI,
Anthropic and Ollama at once, and a client that changes only the `model` name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest

from ai_service.config import parse_config
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator, plan_reply
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from ai_service_protos.ai_service_pb2 import FunctionDefinition, Tool, ToolCall, ToolChoice
from tests.conftest import (
    PROVIDER_KEY_REF,
    PROVIDER_SECRET,
    TEST_ENV,
    TEST_KEY,
    StartGateway,
    config_tree,
)

# public model → (path it reaches on the simulator, upstream model)
MODELS = {
    "sim-gpt": ("/v1/chat/completions", "sim-gpt-1"),
    "sim-claude": ("/v1/messages", "sim-claude-1"),
    "sim-llama": ("/api/chat", "sim-llama-1"),
}
each_model = pytest.mark.parametrize("model", list(MODELS))


def three_providers(simulator_url: str) -> dict[str, Any]:
    tree = config_tree(simulator_url)
    tree["providers"] += [
        {
            "name": "claude-sim",
            "kind": "anthropic",
            "base_url": simulator_url,
            "api_key": PROVIDER_KEY_REF,
        },
        {
            "name": "llama-sim",
            "kind": "ollama",
            "base_url": simulator_url,
            "api_key": PROVIDER_KEY_REF,
        },
    ]
    tree["models"] += [
        {"name": "sim-claude", "provider": "claude-sim", "upstream_model": "sim-claude-1"},
        {"name": "sim-llama", "provider": "llama-sim", "upstream_model": "sim-llama-1"},
    ]
    # These tests are about translation and error mapping: one attempt per call, so a
    # 429's retry-after is reported rather than waited out.
    tree["resilience"] = {"retries": {"max_attempts": 1}}
    return tree


@pytest.fixture
async def gateway(start_gateway: StartGateway, simulator: Simulator) -> Gateway:
    return await start_gateway(parse_config(three_providers(simulator.base_url), env=TEST_ENV))


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[AsyncAIClient]:
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as c:
        yield c


def ask(model: str, text: str, **params: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model=model, messages=[Message(role="user", content=text)], **params
    )


def planned_prompt_tokens(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> int:
    """What the simulator counts for this conversation, whatever the wire format: the
    conversation written as OpenAI's chat-completions reference writes it."""
    body: dict[str, Any] = {"model": "any", "messages": messages}
    if tools:
        body["tools"] = tools
    return plan_reply(body).prompt_tokens


#: The tool round trip's conversation as OpenAI's reference writes it.
ASKED_WEATHER = {"role": "user", "content": "weather in city Paris please"}


def weather_call_and_result(call: ToolCall) -> list[dict[str, Any]]:
    """The model's call of get_weather and its result "18C and sunny", as OpenAI writes them."""
    called = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": call.function.arguments},
            }
        ],
    }
    return [called, {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}]


async def streamed(client: AsyncAIClient, request: ChatCompletionRequest) -> list[Any]:
    return [chunk async for chunk in client.stream_chat(request)]


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content for c in chunks if c.choices)


@each_model
async def test_unary_answer_with_usage_through_each_provider(
    client: AsyncAIClient, simulator: Simulator, model: str
) -> None:
    request = ask(model, "hello gateway")
    request.messages.insert(0, Message(role="system", content="be brief"))
    response = await client.chat(request)

    path, upstream = MODELS[model]
    assert simulator.stats.received[-1].path == path
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content == "You said: hello gateway"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == planned_prompt_tokens(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello gateway"}]
    )
    assert response.usage.completion_tokens == 4
    assert response.usage.total_tokens == response.usage.prompt_tokens + 4
    assert response.model == upstream
    assert response.id


@each_model
async def test_stream_concatenates_to_the_unary_answer_and_ends_with_finish_and_usage(
    client: AsyncAIClient, model: str
) -> None:
    request = ask(model, "/tokens 40 stream me")
    unary = await client.chat(request)
    chunks = await streamed(client, request)

    assert text_of(chunks) == unary.choices[0].message.content
    assert len(text_of(chunks).split()) == 40
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage == unary.usage
    assert all(not c.HasField("usage") for c in chunks[:-1])
    assert all(not c.choices or not c.choices[0].finish_reason for c in chunks[:-1])
    assert {c.id for c in chunks} == {chunks[0].id}


CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = Tool(
    type="function",
    function=FunctionDefinition(
        name="get_weather",
        description="Weather in a city",
        parameters_json=orjson.dumps(CITY).decode(),
    ),
)
#: WEATHER as OpenAI's reference writes a tool.
WEATHER_WIRE = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather in a city", "parameters": CITY},
}


def assemble_tool_call(chunks: list[Any]) -> ToolCall:
    pieces = [d for c in chunks for ch in c.choices for d in ch.delta.tool_calls]
    assert {p.index for p in pieces} == {0}
    call = ToolCall(id=pieces[0].id, type=pieces[0].type)
    call.function.name = pieces[0].function.name
    call.function.arguments = "".join(p.function.arguments for p in pieces)
    return call


@each_model
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_tool_call_round_trip(
    client: AsyncAIClient, simulator: Simulator, model: str, stream: bool
) -> None:
    request = ChatCompletionRequest(
        model=model,
        messages=[Message(role="user", content="weather in city Paris please")],
        tools=[WEATHER],
        tool_choice=ToolChoice(mode="auto"),
    )
    if stream:
        chunks = await streamed(client, request)
        call, finish = assemble_tool_call(chunks), chunks[-1].choices[0].finish_reason
        usage = chunks[-1].usage
    else:
        response = await client.chat(request)
        call, finish = response.choices[0].message.tool_calls[0], response.choices[0].finish_reason
        usage = response.usage
    assert finish == "tool_calls"
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id
    assert usage.prompt_tokens == planned_prompt_tokens([ASKED_WEATHER], [WEATHER_WIRE])

    request.messages.append(Message(role="assistant", tool_calls=[call]))
    request.messages.append(Message(role="tool", tool_call_id=call.id, content="18C and sunny"))
    request.messages.append(Message(role="user", content="thanks"))
    request.messages.pop()  # the tool result is the last word: the model answers it
    answer = await client.chat(request)
    assert answer.choices[0].message.content == "Tool result received: 18C and sunny"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == planned_prompt_tokens(
        [ASKED_WEATHER, *weather_call_and_result(call)], [WEATHER_WIRE]
    )
    if model == "sim-claude":
        last = simulator.stats.received[-1].body["messages"][-1]
        assert last == {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}
            ],
        }
    if model == "sim-llama":
        last = simulator.stats.received[-1].body["messages"][-1]
        assert last["tool_name"] == "get_weather"


@each_model
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_stop_sequence_cuts_the_answer(
    client: AsyncAIClient, model: str, stream: bool
) -> None:
    request = ask(model, "alpha beta gamma delta", stop=["gamma"])
    if stream:
        chunks = await streamed(client, request)
        text, finish = text_of(chunks), chunks[-1].choices[0].finish_reason
    else:
        response = await client.chat(request)
        text, finish = response.choices[0].message.content, response.choices[0].finish_reason
    assert text == "You said: alpha beta "
    assert finish == "stop"


@each_model
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_max_tokens_truncates_with_finish_reason_length(
    client: AsyncAIClient, model: str, stream: bool
) -> None:
    request = ask(model, "/tokens 30 long", max_tokens=7)
    if stream:
        chunks = await streamed(client, request)
        text, finish, usage = text_of(chunks), chunks[-1].choices[0].finish_reason, chunks[-1].usage
    else:
        response = await client.chat(request)
        text, finish = response.choices[0].message.content, response.choices[0].finish_reason
        usage = response.usage
    assert len(text.split()) == 7
    assert finish == "length"
    assert usage.completion_tokens == 7
    assert usage.total_tokens == usage.prompt_tokens + 7


async def test_each_provider_gets_its_own_wire_request(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    def request(model: str) -> ChatCompletionRequest:
        r = ask(model, "hi", temperature=0.5, top_p=0.9, seed=7, stop=["zz"], user="u-1")
        r.messages.insert(0, Message(role="system", content="be brief"))
        return r

    await client.chat(request("sim-claude"))
    claude = simulator.stats.received[-1]
    assert claude.headers["x-api-key"] == PROVIDER_SECRET
    assert claude.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in claude.headers
    assert claude.body == {
        "model": "sim-claude-1",
        "max_tokens": 1024,  # the model's default: the Messages API requires one
        "messages": [{"role": "user", "content": "hi"}],
        "system": "be brief",
        "stop_sequences": ["zz"],
        "temperature": 0.5,
        "top_p": 0.9,
        "metadata": {"user_id": "u-1"},
    }

    await client.chat(request("sim-llama"))
    llama = simulator.stats.received[-1]
    assert llama.headers["authorization"] == f"Bearer {PROVIDER_SECRET}"
    assert llama.body == {
        "model": "sim-llama-1",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "stream": False,
        "options": {"temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": ["zz"]},
    }


@each_model
async def test_a_tool_choice_without_tools_reaches_no_provider(
    client: AsyncAIClient, simulator: Simulator, model: str
) -> None:
    # OpenAI and Anthropic answer 400 to one (the simulator too); without tools it means
    # nothing, so it is left out.
    response = await client.chat(ask(model, "hi", tool_choice=ToolChoice(mode="none")))
    assert response.choices[0].message.content == "You said: hi"
    assert "tool_choice" not in simulator.stats.received[-1].body


async def test_a_reasoning_model_gets_max_completion_tokens(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # A key's output cap sets max_tokens on every call; OpenAI's reasoning models refuse
    # the deprecated field (and the simulator does as they do).
    tree = config_tree(simulator.base_url)
    tree["models"] = [{"name": "reasoner", "provider": "simulator", "upstream_model": "gpt-5-mini"}]
    tree["auth"]["keys"] = [{"name": "tester", "key": TEST_KEY, "max_output_tokens": 50}]
    gateway = await start_gateway(parse_config(tree, env=TEST_ENV))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        response = await client.chat(ask("reasoner", "hi"))
    assert response.choices[0].message.content == "You said: hi"
    assert simulator.stats.received[-1].body["max_completion_tokens"] == 50


# Each error class, through each provider: the simulator answers in the provider's own
# error shape, the adapter and the shared mapping turn it into the status docs/errors.md lists.
ERROR_CASES = [
    (FaultRule("status", status=400, message="bad thing"), "INVALID_ARGUMENT"),
    (FaultRule("status", status=401), "INTERNAL"),
    (FaultRule("status", status=402), "INTERNAL"),  # Anthropic's billing_error
    (FaultRule("status", status=404), "NOT_FOUND"),
    (FaultRule("status", status=408), "DEADLINE_EXCEEDED"),
    (FaultRule("status", status=429, retry_after=7), "RESOURCE_EXHAUSTED"),
    (FaultRule("status", status=500), "UNAVAILABLE"),
    (FaultRule("status", status=529), "UNAVAILABLE"),
    (FaultRule("reset"), "UNAVAILABLE"),
    (FaultRule("malformed", after_chunks=0), "UNAVAILABLE"),
    (FaultRule("cut", after_chunks=0), "UNAVAILABLE"),
]


@each_model
@pytest.mark.parametrize(
    ("fault", "code"),
    ERROR_CASES,
    ids=[f"{f.kind}-{f.status}" if f.kind == "status" else f.kind for f, _ in ERROR_CASES],
)
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_each_error_class_maps_to_the_designed_status(
    client: AsyncAIClient,
    simulator: Simulator,
    model: str,
    fault: FaultRule,
    code: str,
    stream: bool,
) -> None:
    fault.path = MODELS[model][0]
    simulator.add_fault(fault)
    with pytest.raises(AIServiceError) as caught:
        if stream:
            await streamed(client, ask(model, "hello"))
        else:
            await client.chat(ask(model, "hello"))
    error = caught.value
    assert error.code.name == code, error
    assert PROVIDER_SECRET not in str(error)
    if fault.status == 400 and fault.kind == "status":
        assert "bad thing" in error.message
    simulator.clear_faults()
    if fault.status == 429 and fault.kind == "status":
        assert error.retry_after == pytest.approx(7.0)
        # The deployment cools down for its Retry-After: refused at once, not asked.
        asked = simulator.stats.total_requests
        with pytest.raises(AIServiceError) as cooling:
            await client.chat(ask(model, "hello"))
        assert cooling.value.reason == "UPSTREAM_RATE_LIMITED"
        assert cooling.value.retry_after is not None and 0 < cooling.value.retry_after <= 7
        assert simulator.stats.total_requests == asked
        return
    assert (await client.chat(ask(model, "hello"))).choices


@each_model
async def test_stream_cut_mid_way_ends_unavailable_with_the_count(
    client: AsyncAIClient, simulator: Simulator, model: str
) -> None:
    simulator.config.tokens_per_second = 200  # events arrive one by one
    simulator.add_fault(FaultRule("cut", path=MODELS[model][0], after_chunks=8))
    received = []
    with pytest.raises(AIServiceError) as caught:
        async for chunk in client.stream_chat(ask(model, "/tokens 40 go")):
            received.append(chunk)
    assert received
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == "STREAM_INTERRUPTED"
    assert caught.value.error_metadata["chunks_delivered"] == str(len(received))


@each_model
async def test_stalled_upstream_ends_deadline_exceeded_at_the_client_deadline(
    client: AsyncAIClient, simulator: Simulator, model: str
) -> None:
    simulator.add_fault(FaultRule("stall", path=MODELS[model][0], seconds=5))
    with pytest.raises(AIServiceError) as caught:
        await client.chat(ask(model, "hello"), timeout=0.3)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_request_one_provider_cannot_take_goes_to_a_deployment_that_can(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # A temperature above 1 is beyond Anthropic's range: a model mixing providers serves
    # it from the OpenAI deployment every time, and a fallback to the Anthropic model
    # is skipped rather than turning an outage into "your request is invalid".
    tree = three_providers(simulator.base_url)
    tree["models"] += [
        {
            "name": "mixed",
            "deployments": [
                {"provider": "claude-sim", "upstream_model": "sim-claude-1", "weight": 1e6},
                {"provider": "simulator", "upstream_model": "sim-gpt-1"},
            ],
        },
        {"name": "gpt-then-claude", "provider": "simulator", "upstream_model": "down-1"},
    ]
    tree["models"][-1]["fallbacks"] = ["sim-claude"]
    gateway = await start_gateway(parse_config(tree, env=TEST_ENV))
    simulator.add_fault(FaultRule("status", status=503, model="down-1"))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        for _ in range(5):
            answer = await client.chat(ask("mixed", "hot", temperature=1.5))
            assert answer.deployment == "simulator/sim-gpt-1"
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask("gpt-then-claude", "hot", temperature=1.5))
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(AIServiceError) as caught:  # no deployment can: said plainly
            await client.chat(ask("sim-claude", "hot", temperature=1.5))
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert simulator.stats.count(model="sim-claude-1") == 0


async def test_each_model_sends_its_own_default_max_tokens_on_a_shared_deployment(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # Two public models on one Anthropic deployment: each request that sets no
    # max_tokens gets its own model's default (capped by its max_output_tokens).
    shared = {"provider": "claude", "upstream_model": "claude-x"}
    gateway = await start_gateway(
        auth={"keys": [{"name": "tester", "key": TEST_KEY}]},
        providers=[
            {
                "name": "claude",
                "kind": "anthropic",
                "base_url": simulator.base_url,
                "api_key": PROVIDER_KEY_REF,
            }
        ],
        models=[
            {"name": "long", **shared, "default_max_tokens": 4000},
            {"name": "short", **shared, "max_output_tokens": 100},
            {
                "name": "fallen",
                "provider": "claude",
                "upstream_model": "down",
                "fallbacks": ["short"],
            },
        ],
    )
    simulator.add_fault(FaultRule("status", model="down", status=503))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        sent = {}
        for model in ("long", "short", "fallen"):
            await client.chat(
                ChatCompletionRequest(model=model, messages=[Message(role="user", content="hi")])
            )
            sent[model] = simulator.stats.received[-1].body["max_tokens"]
    # The fallback is served as `short`, so with short's default.
    assert sent == {"long": 4000, "short": 100, "fallen": 100}

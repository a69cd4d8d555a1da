"""Unary and streamed chat completions through the real gateway and simulator."""

from __future__ import annotations

import orjson
import pytest

from ai_service.simulator import Simulator, plan_reply
from ai_service_client import AsyncAIClient, ChatCompletionRequest, Message
from ai_service_protos.ai_service_pb2 import FunctionDefinition, Tool, ToolCall, ToolChoice


def ask(text: str, **params: object) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model="sim-gpt", messages=[Message(role="user", content=text)], **params
    )


def expected(text: str) -> object:
    """The simulator's plan for one user message, as OpenAI's reference writes the request."""
    return plan_reply({"model": "sim-gpt-1", "messages": [{"role": "user", "content": text}]})


async def test_unary_answer_arrives_intact_with_usage_and_serving_deployment(
    client: AsyncAIClient,
) -> None:
    request = ask("hello gateway")
    response = await client.chat(request)

    plan = expected("hello gateway")
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content == "You said: hello gateway"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == plan.prompt_tokens  # type: ignore[attr-defined]
    assert response.usage.completion_tokens == 4
    assert response.usage.total_tokens == response.usage.prompt_tokens + 4
    assert response.model == "sim-gpt-1"
    assert response.provider == "simulator"
    assert response.deployment == "simulator/sim-gpt-1"
    assert response.id.startswith("chatcmpl-")
    assert response.created > 0


async def test_stream_concatenates_to_the_unary_answer_and_ends_with_finish_and_usage(
    client: AsyncAIClient,
) -> None:
    request = ask("/tokens 50 stream me")
    unary = await client.chat(request)
    chunks = [chunk async for chunk in client.stream_chat(request)]

    text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    assert text == unary.choices[0].message.content
    assert len(text.split()) == 50
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage == unary.usage
    assert all(not c.choices or not c.choices[0].finish_reason for c in chunks[:-1])
    assert all(not c.HasField("usage") for c in chunks[:-1])
    assert {c.id for c in chunks} == {chunks[0].id}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.deployment for c in chunks} == {"simulator/sim-gpt-1"}


async def test_max_tokens_truncates_with_finish_reason_length(client: AsyncAIClient) -> None:
    response = await client.chat(ask("/tokens 30 long", max_tokens=7))
    assert len(response.choices[0].message.content.split()) == 7
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 7


async def test_stop_sequence_cuts_the_answer(client: AsyncAIClient) -> None:
    response = await client.chat(ask("alpha beta gamma", stop=["gamma"]))
    assert response.choices[0].message.content == "You said: alpha beta "
    assert response.choices[0].finish_reason == "stop"


async def test_sampling_parameters_and_user_reach_the_upstream_exactly(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    await client.chat(
        ask("hi", temperature=0.0, top_p=0.5, seed=42, user="u-1", metadata={"team": "x"})
    )
    body = simulator.stats.received[-1].body
    assert body["temperature"] == 0.0  # an explicit zero is sent, not dropped
    assert body["top_p"] == 0.5
    assert body["seed"] == 42
    assert body["user"] == "u-1"
    assert body["model"] == "sim-gpt-1"
    assert "metadata" not in body  # caller labels stay in the gateway
    assert "max_tokens" not in body and "max_completion_tokens" not in body  # unset stays unset


WEATHER = Tool(
    type="function",
    function=FunctionDefinition(
        name="get_weather",
        description="Weather in a city",
        parameters_json=orjson.dumps(
            {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        ).decode(),
    ),
)


@pytest.mark.parametrize("streamed", [False, True])
async def test_tool_call_round_trip(client: AsyncAIClient, streamed: bool) -> None:
    request = ChatCompletionRequest(
        model="sim-gpt",
        messages=[Message(role="user", content="weather in city Paris please")],
        tools=[WEATHER],
        tool_choice=ToolChoice(mode="auto"),
    )
    if streamed:
        chunks = [c async for c in client.stream_chat(request)]
        pieces = [d for c in chunks for ch in c.choices for d in ch.delta.tool_calls]
        call = ToolCall(id=pieces[0].id, type="function")
        call.function.name = pieces[0].function.name
        call.function.arguments = "".join(p.function.arguments for p in pieces)
        finish = chunks[-1].choices[0].finish_reason
    else:
        response = await client.chat(request)
        call = response.choices[0].message.tool_calls[0]
        finish = response.choices[0].finish_reason
    assert finish == "tool_calls"
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_")

    request.messages.append(Message(role="assistant", tool_calls=[call]))
    request.messages.append(Message(role="tool", tool_call_id=call.id, content="18C and sunny"))
    answer = await client.chat(request)
    assert answer.choices[0].message.content == "Tool result received: 18C and sunny"
    assert answer.choices[0].finish_reason == "stop"


async def test_list_models_shows_what_the_key_may_use(gateway: object) -> None:
    from tests.conftest import RESTRICTED_KEY, TEST_KEY

    address = gateway.address  # type: ignore[attr-defined]
    async with AsyncAIClient(address, TEST_KEY) as open_client:
        assert [m.id for m in await open_client.list_models()] == ["sim-gpt", "sim-other"]
    async with AsyncAIClient(address, RESTRICTED_KEY) as restricted:
        models = await restricted.list_models()
    assert [(m.id, m.provider, list(m.deployments)) for m in models] == [
        ("sim-gpt", "openai", ["simulator/sim-gpt-1"])
    ]


async def test_text_that_arrived_together_is_relayed_in_fewer_chunks(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    simulator.config.tokens_per_second = 0  # the upstream sends as fast as it can
    request = ask("/tokens 2000 burst")
    chunks = [c async for c in client.stream_chat(request)]
    text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    assert text == (await client.chat(request)).choices[0].message.content
    assert len(chunks) < 2000  # coalesced: one gRPC message per network read, not per token
    assert [c.sequence for c in chunks] == list(range(len(chunks)))


async def test_stream_trailers_carry_finish_reason_usage_and_the_serving_deployment(
    gateway: object,
) -> None:
    import grpc

    from ai_service_protos import ai_service_pb2_grpc
    from tests.conftest import TEST_KEY

    address = gateway.address  # type: ignore[attr-defined]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        call = stub.StreamChatCompletion(
            ask("/tokens 12 trailers"), metadata=(("authorization", f"Bearer {TEST_KEY}"),)
        )
        chunks = [chunk async for chunk in call]
        trailers = dict(await call.trailing_metadata())
    usage = chunks[-1].usage
    assert trailers["x-ai-finish-reason"] == "stop"
    assert trailers["x-ai-usage"] == (
        f"prompt={usage.prompt_tokens},completion=12,total={usage.total_tokens}"
    )
    assert trailers["x-ai-deployment"] == "simulator/sim-gpt-1"
    assert trailers["x-ai-attempts"] == "1"

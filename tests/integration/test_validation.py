"""Bad input gets INVALID_ARGUMENT (or NOT_FOUND) naming the field, and costs no upstream call."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from ai_service.policy import validation
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest
from tests.conftest import TEST_KEY, StartGateway, single

USER = {"role": "user", "content": "hi"}
TOOL = {"type": "function", "function": {"name": "f", "parameters_json": "{}"}}
DEEP_JSON = '{"a":' * 300 + "1" + "}" * 300


def request(**fields: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "sim-gpt", "messages": [USER], **fields}
    return json_format.ParseDict(body, ChatCompletionRequest())


BAD_REQUESTS = [
    (request(model=""), "model"),
    (request(model="m" * 20_000), "model"),
    (request(messages=[]), "messages"),
    (request(messages=[USER, {"role": "robot", "content": "x"}]), "messages[1].role"),
    (request(messages=[{"role": "", "content": "x"}]), "messages[0].role"),
    (request(messages=[{"role": "user", "content": ""}]), "messages[0].content"),
    (request(messages=[USER, {"role": "tool", "content": "x"}]), "messages[1].tool_call_id"),
    (
        request(messages=[{"role": "user", "content": "x", "tool_call_id": "c"}]),
        "messages[0].tool_call_id",
    ),
    (
        request(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{oops"}}],
                }
            ]
        ),
        "messages[0].tool_calls[0].function.arguments",
    ),
    (request(temperature=2.5), "temperature"),
    (request(temperature=-0.1), "temperature"),
    (request(temperature="NaN"), "temperature"),
    (request(top_p=1.5), "top_p"),
    (request(presence_penalty=3), "presence_penalty"),
    (request(frequency_penalty=-3), "frequency_penalty"),
    (request(max_tokens=0), "max_tokens"),
    (request(max_tokens=-5), "max_tokens"),
    (request(stop=["a", "b", "c", "d", "e"]), "stop"),
    (request(stop=[""]), "stop[0]"),
    (request(tools=[{"function": {"name": "bad name!"}}]), "tools[0].function.name"),
    (request(tools=[TOOL, TOOL]), "tools[1].function.name"),
    (
        request(tools=[{"function": {"name": "f", "parameters_json": "[1]"}}]),
        "tools[0].function.parameters_json",
    ),
    (
        # Valid JSON, but deeper than any schema needs and than orjson re-encodes.
        request(tools=[{"function": {"name": "f", "parameters_json": DEEP_JSON}}]),
        "tools[0].function.parameters_json",
    ),
    (
        request(response_format={"type": "json_schema", "json_schema": DEEP_JSON}),
        "response_format.json_schema",
    ),
    (request(tools=[{"type": "retrieval", "function": {"name": "f"}}]), "tools[0].type"),
    (request(tool_choice={"mode": "sometimes"}), "tool_choice.mode"),
    (request(tool_choice={"mode": "required"}), "tool_choice.mode"),
    (request(tools=[TOOL], tool_choice={"function": "g"}), "tool_choice.function"),
    (request(response_format={"type": "yaml"}), "response_format.type"),
    (
        request(response_format={"type": "json_schema", "json_schema": "no"}),
        "response_format.json_schema",
    ),
    (request(messages=[{"role": "user", "content": "x" * 2_000_000}]), "request"),
    (request(messages=[USER] * 1025), "messages"),
    (request(tools=[{"function": {"name": f"f{i}"}} for i in range(129)]), "tools"),
    (request(metadata={f"k{i}": "v" for i in range(65)}), "metadata"),
    (request(response_format={}), "response_format.type"),
    (
        request(messages=[{"role": "user", "content": "x", "tool_calls": [{"id": "c1"}]}]),
        "messages[0].tool_calls",
    ),
    (
        request(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]),
        "messages[0].tool_calls[0].id",
    ),
    (
        request(
            messages=[
                {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "a b"}}]}
            ]
        ),
        "messages[0].tool_calls[0].function.name",
    ),
]


def test_every_rule_is_keyed_by_a_field_of_the_request() -> None:
    # Rules run for the fields a request sets, found by name: a misspelt or renamed
    # field would switch its rule off without a word.
    fields = ChatCompletionRequest.DESCRIPTOR.fields_by_name
    assert set(validation._RULES) <= set(fields)


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_bad_requests_name_the_field_and_never_reach_the_upstream(
    client: AsyncAIClient, simulator: Simulator, streamed: bool
) -> None:
    for bad, field in BAD_REQUESTS:
        with pytest.raises(AIServiceError) as caught:
            if streamed:
                [c async for c in client.stream_chat(bad)]
            else:
                await client.chat(bad)
        error = caught.value
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT, (field, error)
        assert [f for f, _ in error.field_violations] == [field], error
        assert error.message.startswith(field)
    assert simulator.stats.total_requests == 0


async def test_unknown_model_is_not_found_without_an_upstream_call(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    with pytest.raises(AIServiceError) as caught:
        await client.chat(request(model="gpt-17"))
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert "gpt-17" in caught.value.message
    assert simulator.stats.total_requests == 0


async def test_a_callers_text_is_quoted_back_cut_short(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    # Errors travel in trailing metadata (16 KiB at most by default) and are logged.
    long = "x" * 10_000
    for bad, field in [
        (request(model="m" * 256), "model"),
        (request(messages=[{"role": long, "content": "x"}]), "messages[0].role"),
        (request(tools=[TOOL], tool_choice={"function": long}), "tool_choice.function"),
        (request(tool_choice={"mode": long}), "tool_choice.mode"),
    ]:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(bad)
        assert caught.value.message.startswith(field), caught.value
        assert len(caught.value.message) < 200 and "characters)" in caught.value.message
    assert simulator.stats.total_requests == 0


async def test_max_tokens_above_the_models_cap_is_refused(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway: Gateway = await start_gateway(
        models=[single("sim-gpt", "sim-gpt-1", max_output_tokens=100)]
    )

    async with AsyncAIClient(gateway.address, TEST_KEY) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(request(max_tokens=101))
        assert caught.value.field_violations[0][0] == "max_tokens"
        assert (await client.chat(request(max_tokens=100))).choices
    assert simulator.stats.total_requests == 1


async def test_temperature_zero_is_valid_and_sent(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    await client.chat(request(temperature=0))
    assert simulator.stats.received[-1].body["temperature"] == 0


async def test_a_refusal_names_its_request_id_unary_and_streamed(client: AsyncAIClient) -> None:
    bad = request(temperature=9)
    for streamed in (False, True):
        metadata = {"x-request-id": f"bad-{streamed}"}
        with pytest.raises(AIServiceError) as caught:
            if streamed:
                [c async for c in client.stream_chat(bad, metadata=metadata)]
            else:
                await client.chat(bad, metadata=metadata)
        assert caught.value.request_id == f"bad-{streamed}"


async def test_a_rule_never_names_the_model_it_routed_to(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # Long prompts to sim-gpt go to a capped model: the refusal names the model the
    # caller named. (A key that may not use the rule's model is never routed there:
    # tests/integration/test_model_policy.py.)
    gateway = await start_gateway(
        models=[
            single(
                "sim-gpt", "sim-gpt-1", rules=[{"min_prompt_chars": 10, "model": "secret-long"}]
            ),
            single("secret-long", "long-1", max_output_tokens=20),
        ]
    )
    async with AsyncAIClient(gateway.address, TEST_KEY) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(
                request(messages=[{"role": "user", "content": "x" * 50}], max_tokens=30)
            )
    assert "secret" not in caught.value.message
    assert "'sim-gpt'" in caught.value.message
    assert caught.value.field_violations[0][0] == "max_tokens"
    assert simulator.stats.total_requests == 0

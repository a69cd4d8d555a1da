"""Bad input gets INVALID_ARGUMENT (or NOT_FOUND) naming the field, and costs no upstream call."""

from __future__ import annotations

import grpc
import pytest

from ai_service.policy import validation
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest
from tests.bad_requests import BAD_REQUESTS, TOOL, request
from tests.conftest import TEST_KEY, StartGateway, single


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

"""Authentication and rate limiting, as a caller meets them."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ai_service.runtime.gateway import Gateway
from ai_service.simulator import Simulator
from ai_service_client import (
    AIServiceError,
    AsyncAIClient,
    AuthenticationError,
    ChatCompletionRequest,
    Message,
)
from tests.conftest import RESTRICTED_KEY, TEST_KEY, StartGateway, token_budgeted_keys, until

HELLO = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hello")])


async def call(
    gateway: Gateway, key: str | None, request: ChatCompletionRequest = HELLO, **kw: object
) -> object:
    async with AsyncAIClient(gateway.address, key, timeout=10) as client:
        return await client.chat(request, **kw)  # type: ignore[arg-type]


async def stream(gateway: Gateway, metadata: list[tuple[str, str]]) -> list[object]:
    async with AsyncAIClient(gateway.address, None, timeout=10) as client:
        return [c async for c in client.stream_chat(HELLO, metadata=metadata)]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ([], "missing credentials"),
        ([("authorization", "Bearer wrong-key")], "invalid API key"),
        ([("authorization", f"Basic {TEST_KEY}")], "must be 'Bearer <key>'"),
        ([("authorization", "Bearer ")], "must be 'Bearer <key>'"),
        ([("x-api-key", "nope")], "invalid API key"),
        (
            [("authorization", f"Bearer {TEST_KEY}"), ("x-api-key", RESTRICTED_KEY)],
            "conflicting credentials",
        ),
    ],
)
async def test_bad_credentials_are_unauthenticated_for_unary_and_stream(
    gateway: Gateway, simulator: Simulator, metadata: list[tuple[str, str]], message: str
) -> None:
    for attempt in (stream(gateway, metadata), _unary_with(gateway, metadata)):
        with pytest.raises(AIServiceError) as caught:
            await attempt
        assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
        assert message in caught.value.message
        assert caught.value.reason == "UNAUTHENTICATED"
        assert "wrong-key" not in str(caught.value) and TEST_KEY not in str(caught.value)
    assert simulator.stats.total_requests == 0


async def _unary_with(gateway: Gateway, metadata: list[tuple[str, str]]) -> object:
    async with AsyncAIClient(gateway.address, None, timeout=10) as client:
        return await client.chat(HELLO, metadata=metadata)


@pytest.mark.parametrize(
    "metadata",
    [
        [("authorization", f"Bearer {TEST_KEY}")],
        [("authorization", f"bearer   {TEST_KEY}  ")],
        [("x-api-key", TEST_KEY)],
        [("authorization", f"Bearer {TEST_KEY}"), ("x-api-key", TEST_KEY)],
    ],
)
async def test_good_key_is_accepted_in_either_header(
    gateway: Gateway, metadata: list[tuple[str, str]]
) -> None:
    response = await _unary_with(gateway, metadata)
    assert response.choices[0].message.content == "You said: hello"  # type: ignore[attr-defined]


async def test_key_not_allowed_the_model_is_permission_denied(
    gateway: Gateway, simulator: Simulator
) -> None:
    other = ChatCompletionRequest(model="sim-other", messages=HELLO.messages)
    with pytest.raises(AIServiceError) as caught:
        await call(gateway, RESTRICTED_KEY, other)
    assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert "restricted" in caught.value.message and "sim-other" in caught.value.message
    assert simulator.stats.total_requests == 0
    assert await call(gateway, RESTRICTED_KEY)  # its own model works


async def test_health_and_reflection_need_no_key(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ai_service.v1.AIService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in reflection.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"ai_service.v1.AIService", "grpc.health.v1.Health"} <= names


async def test_rate_limit_rejects_the_call_after_the_allowance_with_retry_info(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(rate_limit={"requests_per_minute": 5})
    for _ in range(5):
        await call(gateway, TEST_KEY)
    with pytest.raises(AIServiceError) as caught:
        await call(gateway, TEST_KEY)
    error = caught.value
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "RATE_LIMITED"
    assert error.retry_after is not None and 0 < error.retry_after <= 12.0  # one request's refill
    assert error.quota_violations == [("key:tester", "5 requests per minute")]
    assert simulator.stats.total_requests == 5
    # Limits are per key: another key still has its own allowance.
    assert await call(gateway, RESTRICTED_KEY)


async def test_per_key_rate_limit_overrides_the_default(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(
        auth={
            "keys": [
                {"name": "tester", "key": TEST_KEY, "rate_limit": {"requests_per_minute": 2}},
            ]
        },
        rate_limit={"requests_per_minute": 1000},
    )
    await call(gateway, TEST_KEY)
    await call(gateway, TEST_KEY)
    with pytest.raises(AIServiceError) as caught:
        await stream(gateway, [("authorization", f"Bearer {TEST_KEY}")])
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_auth_switched_off_accepts_anyone_and_says_so(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        gateway = await start_gateway(auth={"enabled": False})
    assert await call(gateway, None)
    assert any("authentication is OFF" in r.getMessage() for r in caplog.records)


async def test_keys_may_be_configured_as_sha256_digests(start_gateway: StartGateway) -> None:
    import hashlib

    digest = hashlib.sha256(b"hashed-secret-key").hexdigest()
    gateway = await start_gateway(
        auth={"keys": [{"name": "hashed", "key_sha256": f"sha256:{digest}"}]}
    )
    assert await call(gateway, "hashed-secret-key")
    with pytest.raises(AuthenticationError):
        await call(gateway, f"sha256:{digest}")  # the digest itself is no key


async def test_a_keys_output_cap_refuses_more_and_imposes_itself(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(
        auth={"keys": [{"name": "tester", "key": TEST_KEY, "max_output_tokens": 50}]}
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(
                ChatCompletionRequest(model="sim-gpt", messages=HELLO.messages, max_tokens=51)
            )
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.field_violations[0][0] == "max_tokens"
        assert "at most 50" in caught.value.message
        await client.chat(HELLO)
    assert simulator.stats.received[-1].body["max_completion_tokens"] == 50
    assert simulator.stats.total_requests == 1


async def test_a_keys_imposed_cap_never_exceeds_the_models_own(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(
        auth={"keys": [{"name": "tester", "key": TEST_KEY, "max_output_tokens": 4096}]},
        models=[
            {
                "name": "sim-gpt",
                "provider": "simulator",
                "upstream_model": "sim-gpt-1",
                "max_output_tokens": 100,
            }
        ],
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        await client.chat(HELLO)  # sets no max_tokens
    assert simulator.stats.received[-1].body["max_completion_tokens"] == 100


async def test_a_keys_concurrent_streams_are_capped(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(
        auth={"keys": [{"name": "tester", "key": TEST_KEY, "max_concurrent_streams": 2}]}
    )
    simulator.config.tokens_per_second = 20
    slow = ChatCompletionRequest(
        model="sim-gpt", messages=[Message(role="user", content="/tokens 10 slow")]
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        open_streams = [client.stream_chat(slow) for _ in range(2)]
        for stream in open_streams:
            await anext(stream)  # type: ignore[call-overload]
        with pytest.raises(AIServiceError) as caught:
            [c async for c in client.stream_chat(slow)]
        assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert caught.value.reason == "TOO_MANY_STREAMS"
        assert caught.value.quota_violations == [("key:tester", "2 concurrent streams")]
        assert (await client.chat(HELLO)).choices  # unary calls are not streams
        for stream in open_streams:
            [c async for c in stream]  # type: ignore[attr-defined]
        assert [c async for c in client.stream_chat(HELLO)]  # a slot is free again


async def test_a_calls_token_reservation_is_its_own_even_in_a_shared_flight(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # A caller whose tokens are spent is refused, naming its own key, even when the same
    # cacheable call is already in flight for another key (it would cost the upstream).
    gateway = await start_gateway(
        cache={"enabled": True},
        auth={
            "keys": [
                {"name": "tester", "key": TEST_KEY},
                {
                    "name": "restricted",
                    "key": RESTRICTED_KEY,
                    "rate_limit": {"requests_per_minute": 0, "tokens_per_minute": 10},
                },
            ]
        },
    )
    cacheable = ChatCompletionRequest(
        model="sim-gpt", messages=[Message(role="user", content="hello")], temperature=0
    )
    async with (
        AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as rich,
        AsyncAIClient(gateway.address, RESTRICTED_KEY, timeout=10) as poor,
    ):
        await poor.chat(HELLO)  # spends its 10 tokens (the answer's usage is more)
        simulator.config.latency_ms = 1000  # the flight is in the air while the other asks
        asked = simulator.stats.total_requests
        leader = asyncio.ensure_future(rich.chat(cacheable))
        await until(  # its flight is waiting on the upstream
            lambda: simulator.stats.total_requests == asked + 1, "the leader's request upstream"
        )
        with pytest.raises(AIServiceError) as caught:
            await poor.chat(cacheable)
        assert (await leader).choices[0].message.content == "You said: hello"
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "for key 'restricted'" in caught.value.message


async def test_a_call_cut_short_at_the_upstream_is_charged_its_prompt(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # The upstream has read the prompt of a call whose deadline ran out: a key that
    # keeps timing out must still run out of tokens.
    gateway = await start_gateway(rate_limit={"requests_per_minute": 0, "tokens_per_minute": 300})
    simulator.config.latency_ms = 2000
    prompt = ChatCompletionRequest(  # ~103 prompt tokens, ~108 reserved
        model="sim-gpt", messages=[Message(role="user", content="x" * 400)], max_tokens=5
    )
    codes = []
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=0.3) as client:
        for _ in range(4):
            with pytest.raises(AIServiceError) as caught:
                await client.chat(prompt)
            codes.append(caught.value.code)
    assert codes[:2] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[2:]


async def test_a_call_that_never_left_the_gateway_costs_no_tokens(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # Out of time while queued for a busy deployment's slot: the upstream never saw it.
    gateway = await start_gateway(
        models=[
            {
                "name": "sim-gpt",
                "deployments": [
                    {
                        "provider": "simulator",
                        "upstream_model": "sim-gpt-1",
                        "max_concurrency": 1,
                        "max_queue": 10,
                    }
                ],
            }
        ],
        auth=token_budgeted_keys(300),
    )
    simulator.config.latency_ms = 3000
    prompt = ChatCompletionRequest(  # ~103 prompt tokens, ~108 reserved
        model="sim-gpt", messages=[Message(role="user", content="x" * 400)], max_tokens=5
    )
    async with (
        AsyncAIClient(gateway.address, RESTRICTED_KEY, timeout=10) as other,
        AsyncAIClient(gateway.address, TEST_KEY, timeout=0.3) as queued,
    ):
        holder = asyncio.ensure_future(other.chat(HELLO))  # holds the only slot
        (limiter,) = (handle.limiter for handle in gateway.router.deployments)
        deadline = time.monotonic() + 10
        while limiter.in_flight == 0:
            assert time.monotonic() < deadline, "the first call never took its slot"
            await asyncio.sleep(0.01)
        codes = []
        for _ in range(4):
            with pytest.raises(AIServiceError) as caught:
                await queued.chat(prompt)
            codes.append(caught.value.code)
        holder.cancel()
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 4
    assert simulator.stats.total_requests == 1


async def test_failed_authentications_are_throttled_per_address_and_valid_keys_pass(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(auth__failed_attempts_burst=3, auth__failed_attempts_per_minute=6)
    codes = []
    for _ in range(3):
        with pytest.raises(AIServiceError) as caught:
            await call(gateway, "not-a-key-0123456789")
        codes.append(caught.value.code)
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 3
    for key in ("not-a-key-0123456789", None):  # a wrong key, and none at all
        with pytest.raises(AIServiceError) as caught:
            await call(gateway, key)
        error = caught.value
        assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.reason == "AUTH_THROTTLED"
        assert error.retry_after is not None and 0 < error.retry_after <= 10.0  # one refill
        assert error.quota_violations == [
            ("client:127.0.0.1", "6 failed authentications per minute")
        ]
    # Behind a proxy every caller shares one address: a valid key always passes.
    await call(gateway, TEST_KEY)
    assert simulator.stats.total_requests == 1

"""No caller key or provider key ever shows up in a log line or an error."""

from __future__ import annotations

import logging

import pytest

from ai_service.errors import UpstreamUnavailable, keep_secret, to_rpc_status
from ai_service.observability.logging import JsonFormatter
from ai_service.providers.status_mapping import MAX_MESSAGE_CHARS
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import PROVIDER_SECRET, TEST_KEY

HELLO = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hello")])


async def test_keys_never_reach_logs_or_errors(
    gateway: Gateway, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[str] = []
    with caplog.at_level(logging.DEBUG):
        async with AsyncAIClient(gateway.address, TEST_KEY) as client:
            await client.chat(HELLO)
            [c async for c in client.stream_chat(HELLO)]
            # The upstream refuses the gateway's provider key and quotes it back, as
            # OpenAI's 401 body does: the gateway must not pass it on.
            simulator.add_fault(
                FaultRule(
                    "status", status=401, times=1, message=f"Incorrect API key: {PROVIDER_SECRET}"
                )
            )
            simulator.add_fault(
                FaultRule(
                    "status", status=400, times=1, message=f"bad request with {PROVIDER_SECRET}"
                )
            )
            for _ in range(2):
                with pytest.raises(AIServiceError) as caught:
                    await client.chat(HELLO)
                errors.append(str(caught.value))
        async with AsyncAIClient(gateway.address, TEST_KEY + "-wrong") as wrong:
            with pytest.raises(AIServiceError) as caught:
                await wrong.chat(HELLO)
            errors.append(str(caught.value))
    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert lines, "expected the gateway to log something"
    for text in [*lines, *errors]:
        assert TEST_KEY not in text
        assert PROVIDER_SECRET not in text
    assert any("***" in e for e in errors)  # the 400's message was passed on, scrubbed


async def test_a_provider_key_across_the_message_cut_leaves_no_prefix(
    gateway: Gateway, simulator: Simulator
) -> None:
    # The upstream's message is cut to MAX_MESSAGE_CHARS: scrubbed first, or a key
    # straddling the cut would survive as a prefix nothing recognises any more.
    padding = "x" * (MAX_MESSAGE_CHARS - len(PROVIDER_SECRET) // 2)
    simulator.add_fault(FaultRule("status", status=400, times=1, message=padding + PROVIDER_SECRET))
    async with AsyncAIClient(gateway.address, TEST_KEY) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(HELLO)
    assert PROVIDER_SECRET[: len(PROVIDER_SECRET) // 2] not in caught.value.message


def test_no_status_carries_a_provider_key_whatever_made_its_message() -> None:
    # Errors raised mid-stream, or from a 200 body, are built by the adapters without
    # the key at hand: the one translation to a status scrubs every key it was given.
    keep_secret("sk-registered-0123456789")
    error = UpstreamUnavailable("upstream 'p' failed mid-stream: bad key sk-registered-0123456789")
    error.metadata["cause"] = "sk-registered-0123456789"
    _code, message, trailers = to_rpc_status(error)
    assert "sk-registered" not in message
    assert all(b"sk-registered" not in value for _, value in trailers if isinstance(value, bytes))
    assert "***" in message


def test_a_key_that_starts_with_another_is_scrubbed_whole_and_placeholders_are_left() -> None:
    keep_secret("sk-shared-prefix-01")
    keep_secret("sk-shared-prefix-01-and-its-longer-tail")
    keep_secret("ollama")  # a placeholder, not a credential: provider names stay readable
    message = to_rpc_status(
        UpstreamUnavailable("upstream 'ollama' echoed sk-shared-prefix-01-and-its-longer-tail")
    )[1]
    assert message == "upstream 'ollama' echoed ***"

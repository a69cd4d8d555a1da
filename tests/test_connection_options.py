"""Life behind a load balancer: max_connection_age rebalances connections, its grace keeps
streams whole (and a grace shorter than a stream cuts it: the setting is real)."""

from __future__ import annotations

import pytest

from client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from server.simulator import Simulator
from tests.conftest import TEST_KEY, StartGateway

LONG = ChatCompletionRequest(
    model="sim-gpt", messages=[Message(role="user", content="/tokens 30 x")]
)


async def test_a_stream_outliving_the_connection_age_completes_within_the_grace(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    simulator.config.tokens_per_second = 20  # 1.5 s of stream
    gateway = await start_gateway(
        server={
            "listen": "127.0.0.1:0",
            "max_connection_age_seconds": 0.5,
            "max_connection_age_grace_seconds": 10,
        }
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        chunks = [c async for c in client.stream_chat(LONG)]
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert chunks[-1].usage.completion_tokens == 30
        # The aged connection was closed gracefully; the channel simply reconnects.
        assert (await client.chat(LONG)).choices


async def test_a_grace_shorter_than_the_stream_cuts_it(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    simulator.config.tokens_per_second = 10  # 3 s of stream
    gateway = await start_gateway(
        server={
            "listen": "127.0.0.1:0",
            "max_connection_age_seconds": 0.5,
            "max_connection_age_grace_seconds": 0.5,
        }
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError):
            [c async for c in client.stream_chat(LONG)]

"""Cancelled calls close their upstream exchange and leak nothing from the pool.

httpcore loses pool slots when a request is cancelled while waiting for a
connection (encode/httpcore#1093); a gateway cancels all day. These
tests cancel thousands of streams at random moments under pool contention, for
each HTTP client behind the seam, and then require the pool to serve again.
"""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from ai_service.config import ProviderSettings
from ai_service.providers.http import create_http_client
from ai_service.simulator import Simulator
from ai_service_client import AsyncAIClient, ChatCompletionRequest, DeadlineExceededError, Message
from tests.conftest import PROVIDER_KEY_REF, PROVIDER_SECRET, TEST_KEY, StartGateway, until

SLOW = ChatCompletionRequest(
    model="sim-gpt", messages=[Message(role="user", content="/tokens 30 slow stream")]
)
HELLO = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hello")])


async def _cancel_after(client: AsyncAIClient, delay: float, streamed: bool) -> None:
    async def consume() -> None:
        if streamed:
            async for _ in client.stream_chat(SLOW):
                pass
        else:
            await client.chat(SLOW)

    task = asyncio.create_task(consume())
    await asyncio.sleep(delay)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("http_client", ["h1", "aiohttp", "httpx2"])
async def test_thousands_of_cancels_under_pool_contention_leave_the_pool_serving(
    start_gateway: StartGateway, simulator: Simulator, http_client: str
) -> None:
    simulator.config.latency_ms = 15
    simulator.config.tokens_per_second = 400
    gateway = await start_gateway(
        providers=[
            {
                "name": "simulator",
                "base_url": f"{simulator.base_url}/v1",
                "api_key": PROVIDER_KEY_REF,
                "http_client": http_client,
                # Four connections for a hundred concurrent calls: most wait for a slot,
                # and many are cancelled exactly then. A leaked slot shows as a pool timeout.
                "pool": {"max_connections": 4},
                "timeouts": {"pool": 3},
            }
        ]
    )
    rng = random.Random(1093)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=30) as client:
        for wave in range(20):
            await asyncio.gather(
                *(
                    _cancel_after(client, rng.uniform(0.0, 0.04), streamed=(i + wave) % 4 != 0)
                    for i in range(100)
                )
            )
        # Every slot must be back: more concurrent calls than slots all succeed.
        simulator.config.latency_ms = 0
        answers = await asyncio.gather(*(client.chat(HELLO, timeout=20) for _ in range(40)))
    assert all(a.choices[0].message.content == "You said: hello" for a in answers)


@pytest.mark.parametrize("http_client", ["h1", "aiohttp", "httpx2"])
async def test_http_seam_survives_thousands_of_random_cancels_with_its_pool_intact(
    simulator: Simulator, http_client: str
) -> None:
    settings = ProviderSettings.model_validate(
        {
            "name": "simulator",
            "base_url": f"{simulator.base_url}/v1",
            "http_client": http_client,
            "pool": {"max_connections": 10},
            "timeouts": {"pool": 2},
        }
    )
    http = create_http_client(settings)
    url = f"{simulator.base_url}/v1/chat/completions"
    body = orjson.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "/tokens 20 x"}],
            "stream": True,
        }
    )
    headers = {"content-type": "application/json", "authorization": f"Bearer {PROVIDER_SECRET}"}

    async def one() -> int:
        async with http.post(url, body, headers) as response:
            async for _ in response.iter_bytes():
                pass
            return response.status

    rng = random.Random(1093)
    try:
        for _ in range(150):  # 3,000 calls on 10 connections, cancelled at random moments
            calls = [asyncio.wait_for(one(), rng.uniform(0, 0.004)) for _ in range(20)]
            await asyncio.gather(*calls, return_exceptions=True)
        statuses = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(30))), 10)
    finally:
        await http.aclose()
    assert statuses == [200] * 30


async def test_cancelled_stream_closes_the_upstream_connection_at_once(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    await client.chat(HELLO)  # warm: the channel and the upstream pool exist
    # A minute between tokens: closed "at once" means long before the next one is due.
    simulator.config.tokens_per_second = 1 / 60
    tasks_before = len(asyncio.all_tasks())
    stream = client.stream_chat(SLOW)
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    await until(lambda: bool(simulator.stats.disconnects), "the upstream stream closed", seconds=30)
    assert simulator.stats.disconnects[0].events_sent < 30  # cut, not finished
    # The gateway has no stream left in flight upstream, and no task left behind.
    assert simulator.stats.streams_in_flight == 0
    await until(lambda: len(asyncio.all_tasks()) <= tasks_before, "the call's tasks ended")


async def test_client_deadline_mid_stream_closes_the_upstream(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    simulator.config.tokens_per_second = 20
    with pytest.raises(DeadlineExceededError):
        async for _ in client.stream_chat(SLOW, timeout=0.3):
            pass
    await until(lambda: bool(simulator.stats.disconnects), "the upstream stream closed")
    assert simulator.stats.streams_in_flight == 0

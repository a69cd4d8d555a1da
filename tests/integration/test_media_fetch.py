"""Image and document URLs the gateway fetches for providers that take only bytes, and
the guards around it, against a real HTTP server on loopback: loopback, private,
link-local (metadata) and mapped addresses refused unless allowed, redirects checked at
every hop, size, media-type and time limits — each refusal INVALID_ARGUMENT naming the
part's field, and no upstream call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aiohttp import web

from ai_service.config import DEMO_KEY, GatewayConfig, embedded_default, with_sections
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    ContentPart,
    DocumentPart,
    ImagePart,
    Message,
)
from tests.integration.test_content import PDF, PNG

LIMIT = 1000


@dataclass
class Assets:
    """A web server on 127.0.0.1 and on 127.0.0.2 (another loopback address)."""

    port: int = 0
    other_port: int = 0
    hits: list[str] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        port = self.port if host != "127.0.0.2" else self.other_port
        return f"http://{host}:{port}{path}"


@pytest.fixture
async def assets() -> AsyncIterator[Assets]:
    found = Assets()

    async def serve(request: web.Request) -> web.StreamResponse:
        found.hits.append(f"{request.host}{request.path}")
        name = request.match_info["name"]
        if name == "pixel.png":
            return web.Response(body=PNG, content_type="image/png")
        if name == "notes.pdf":
            return web.Response(body=PDF, content_type="application/pdf")
        if name == "page.html":
            return web.Response(text="<html></html>", content_type="text/html")
        if name == "big.png":
            return web.Response(body=PNG + bytes(LIMIT), content_type="image/png")
        if name == "chunked.png":
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(4):
                await response.write(bytes(LIMIT // 2))
            return response
        if name == "slow.png":
            await asyncio.sleep(30)
        if name == "to-other":
            raise web.HTTPFound(found.url("/pixel.png", "127.0.0.2"))
        if name == "to-pixel":
            raise web.HTTPFound("/pixel.png")
        if name == "loop":
            raise web.HTTPFound("/loop")
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    sites = [web.TCPSite(runner, host, 0) for host in ("127.0.0.1", "127.0.0.2")]
    for site in sites:
        await site.start()
    assert runner.addresses
    found.port, found.other_port = (address[1] for address in runner.addresses)
    yield found
    await runner.cleanup()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as simulator:
        yield simulator


def config(sim: Simulator, **media_fetch: Any) -> GatewayConfig:
    base = embedded_default(sim.base_url, listen="127.0.0.1:0")
    fetch = {"max_bytes": LIMIT, "timeout_seconds": 1, "max_redirects": 2, **media_fetch}
    return with_sections(
        base, {"media_fetch": fetch, "observability": {"metrics": {"enabled": False}}}
    )


@contextlib.asynccontextmanager
async def client_of(gateway_config: GatewayConfig) -> AsyncIterator[AsyncAIClient]:
    async with (
        Gateway(gateway_config) as gateway,
        AsyncAIClient(gateway.address, DEMO_KEY, timeout=10) as client,
    ):
        yield client


@pytest.fixture
async def guarded(sim: Simulator) -> AsyncIterator[AsyncAIClient]:
    """The defaults: nothing but public addresses."""
    async with client_of(config(sim)) as client:
        yield client


@pytest.fixture
async def trusting(sim: Simulator) -> AsyncIterator[AsyncAIClient]:
    """127.0.0.1 allowed (an internal asset server), nothing else."""
    async with client_of(config(sim, allowed_networks=["127.0.0.1/32"])) as client:
        yield client


def image_at(url: str, model: str = "sim-llava") -> ChatCompletionRequest:
    part = ContentPart(image=ImagePart(url=url))
    return ChatCompletionRequest(
        model=model, messages=[Message(role="user", content="What is this?", parts=[part])]
    )


async def refusal(ai: AsyncAIClient, request: ChatCompletionRequest) -> str:
    with pytest.raises(AIServiceError) as caught:
        await ai.chat(request)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT, caught.value
    ((field_name, description),) = caught.value.field_violations
    assert field_name == "messages[0].parts[0].image.url"
    return description


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{port}/pixel.png", "127.0.0.1 is a loopback address"),
        ("http://localhost:{port}/pixel.png", "is a loopback address"),
        ("http://[::ffff:127.0.0.1]:{port}/pixel.png", "127.0.0.1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local"),
        ("http://10.0.0.1/pixel.png", "10.0.0.1 is a private address"),
        ("http://100.64.0.1/pixel.png", "100.64.0.1 is a private address"),
        ("http://[fd00::1]/pixel.png", "fd00::1 is a private address"),
        ("http://0.0.0.0:{port}/pixel.png", "0.0.0.0 is a"),
    ],
)
async def test_forbidden_addresses_are_refused_without_a_request(
    guarded: AsyncAIClient, assets: Assets, sim: Simulator, url: str, reason: str
) -> None:
    description = await refusal(guarded, image_at(url.format(port=assets.port)))
    assert reason in description
    assert not assets.hits and not sim.stats.received


async def test_an_allowed_network_is_fetched_and_the_bytes_reach_ollama(
    trusting: AsyncAIClient, assets: Assets, sim: Simulator
) -> None:
    response = await trusting.chat(image_at(assets.url("/pixel.png")))
    expected = f"You said: What is this? You sent 1 image (image/png, {len(PNG)} bytes)."
    assert response.choices[0].message.content == expected
    (sent,) = sim.stats.received
    assert sent.body["messages"][0]["images"]  # raw base64, as Ollama takes images


async def test_a_redirect_within_the_allowed_network_is_followed(
    trusting: AsyncAIClient, assets: Assets
) -> None:
    response = await trusting.chat(image_at(assets.url("/to-pixel")))
    assert "image/png" in response.choices[0].message.content


async def test_a_redirect_to_a_forbidden_address_is_refused(
    trusting: AsyncAIClient, assets: Assets
) -> None:
    description = await refusal(trusting, image_at(assets.url("/to-other")))
    assert "127.0.0.2 is a loopback address" in description
    assert assets.hits == [f"127.0.0.1:{assets.port}/to-other"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/page.html", "serves text/html; expected one of image/"),
        ("/big.png", f"the limit is {LIMIT} bytes"),
        ("/chunked.png", f"serves more than {LIMIT} bytes"),
        ("/slow.png", "could not be fetched within 1s"),
        ("/loop", "redirects more than 2 times"),
        ("/missing.png", "HTTP 404"),
    ],
)
async def test_limits_on_what_is_fetched(
    trusting: AsyncAIClient, assets: Assets, sim: Simulator, path: str, reason: str
) -> None:
    assert reason in await refusal(trusting, image_at(assets.url(path)))
    assert not sim.stats.received


async def test_a_provider_that_takes_urls_gets_the_url(
    guarded: AsyncAIClient, assets: Assets, sim: Simulator
) -> None:
    response = await guarded.chat(image_at(assets.url("/pixel.png"), model="sim-gpt"))
    assert response.choices[0].message.content.endswith("You sent 1 image (by URL).")
    assert not assets.hits  # OpenAI fetches image URLs itself
    (sent,) = sim.stats.received
    assert sent.body["messages"][0]["content"][1]["image_url"]["url"] == assets.url("/pixel.png")


async def test_a_document_url_is_fetched_for_openai(
    trusting: AsyncAIClient, assets: Assets
) -> None:
    part = ContentPart(document=DocumentPart(url=assets.url("/notes.pdf"), name="notes.pdf"))
    request = ChatCompletionRequest(
        model="sim-gpt", messages=[Message(role="user", content="Read", parts=[part])]
    )
    response = await trusting.chat(request)
    assert response.choices[0].message.content == (
        f'You said: Read You sent 1 document (application/pdf, {len(PDF)} bytes, "notes.pdf").'
    )


async def test_fetching_can_be_turned_off(sim: Simulator, assets: Assets) -> None:
    async with client_of(config(sim, enabled=False)) as ai:
        description = await refusal(ai, image_at(assets.url("/pixel.png")))
    assert "media_fetch is off" in description

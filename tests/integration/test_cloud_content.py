"""Content beyond text on the cloud adapters, through the real gateway and the simulator
speaking each cloud's API: images, documents and audio (inline, and fetched from a URL
where the API takes only bytes), reasoning with signatures (unary, streamed, and sent back
on a tool loop as each API checks it), prompt caching and its usage, and Embed."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from aiohttp import web

from ai_service.config import parse_config
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient
from ai_service_protos.ai_service_pb2 import (
    AudioPart,
    CacheControl,
    ChatCompletionRequest,
    ContentPart,
    DocumentPart,
    EmbedRequest,
    ImagePart,
    Message,
    ReasoningConfig,
    ToolChoice,
)
from tests.clouds import (
    CLOUD_ENV,
    EMBEDDING_MODELS,
    cloud_models,
    cloud_providers,
    embedding_models,
    service_account_file,
)
from tests.conftest import TEST_KEY, StartGateway, config_tree
from tests.integration.test_content import PDF, PNG, WAV, streamed
from tests.integration.test_provider_e2e import WEATHER

CHAT = (
    "sim-azure",
    "sim-azure-entra",
    "sim-gemini",
    "sim-vertex",
    "sim-vertex-claude",
    "sim-bedrock",
)
REASONING = ("sim-gemini", "sim-vertex", "sim-vertex-claude", "sim-bedrock")


@pytest.fixture
async def gateway(start_gateway: StartGateway, simulator: Simulator, tmp_path: Path) -> Gateway:
    tree = config_tree(simulator.base_url)
    tree["providers"] += cloud_providers(
        simulator.base_url, service_account_file(tmp_path, simulator)
    )
    tree["models"] += cloud_models() + embedding_models()
    # Bedrock's Claude is named so: reasoning goes to it as Claude's thinking.
    for model in tree["models"]:
        if model["name"] == "sim-bedrock":
            model["upstream_model"] = "anthropic.sim-claude-v1:0"
    tree["resilience"] = {"retries": {"max_attempts": 1}}
    tree["media_fetch"] = {"allowed_networks": ["127.0.0.1/32"]}
    return await start_gateway(parse_config(tree, env=CLOUD_ENV))


@pytest.fixture
async def ai(gateway: Gateway) -> Any:
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        yield client


def ask(model: str, text: str, *parts: ContentPart, **fields: Any) -> ChatCompletionRequest:
    message = Message(role="user", content=text, parts=parts)
    return ChatCompletionRequest(model=model, messages=[message], **fields)


def image() -> ContentPart:
    return ContentPart(image=ImagePart(data=PNG, media_type="image/png"))


async def both(ai: AsyncAIClient, request: ChatCompletionRequest) -> tuple[Any, Any]:
    """(unary response, (text, reasoning blocks) of the stream)."""
    unary = await ai.chat(request)
    return unary, streamed([chunk async for chunk in ai.stream_chat(request)])


# --- media ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", CHAT)
async def test_an_image_reaches_every_cloud_model_and_is_described(
    ai: AsyncAIClient, model: str
) -> None:
    unary, (text, _) = await both(ai, ask(model, "What is this?", image()))
    expected = f"You said: What is this? You sent 1 image (image/png, {len(PNG)} bytes)."
    assert unary.choices[0].message.content == expected
    assert text == expected


@pytest.mark.parametrize(
    ("model", "named"),
    [
        ("sim-azure", ', "notes.pdf"'),
        ("sim-gemini", ""),  # inline data carries no name
        ("sim-vertex-claude", ', "notes.pdf"'),
        ("sim-bedrock", ', "notes-pdf"'),  # Bedrock's names allow no dot
    ],
)
async def test_a_document_reaches_the_cloud_models(
    ai: AsyncAIClient, model: str, named: str
) -> None:
    part = ContentPart(
        document=DocumentPart(data=PDF, media_type="application/pdf", name="notes.pdf")
    )
    response = await ai.chat(ask(model, "Summarise", part))
    assert response.choices[0].message.content == (
        f"You said: Summarise You sent 1 document (application/pdf, {len(PDF)} bytes{named})."
    )


async def test_audio_reaches_azure_and_gemini_and_bedrock_refuses_it(ai: AsyncAIClient) -> None:
    part = ContentPart(audio=AudioPart(data=WAV, format="wav"))
    for model in ("sim-azure", "sim-gemini", "sim-vertex"):
        response = await ai.chat(ask(model, "Transcribe", part))
        assert response.choices[0].message.content == (
            f"You said: Transcribe You sent 1 audio (audio/wav, {len(WAV)} bytes)."
        )
    with pytest.raises(AIServiceError) as caught:
        await ai.chat(ask("sim-bedrock", "Transcribe", part))
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations[0][0] == "messages[0].parts[0].audio"


@pytest.fixture
async def pixel_url() -> AsyncIterator[str]:
    """The URL of a PNG on a web server on loopback (an allowed network here)."""

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/pixel.png", serve)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/pixel.png"
    await runner.cleanup()


@pytest.mark.parametrize("model", ["sim-gemini", "sim-bedrock"])
async def test_an_image_by_url_is_fetched_for_apis_that_take_only_bytes(
    ai: AsyncAIClient, simulator: Simulator, pixel_url: str, model: str
) -> None:
    part = ContentPart(image=ImagePart(url=pixel_url))
    response = await ai.chat(ask(model, "What is this?", part))
    assert response.choices[0].message.content == (
        f"You said: What is this? You sent 1 image (image/png, {len(PNG)} bytes)."
    )
    assert pixel_url not in orjson.dumps(simulator.stats.received[-1].body).decode()


async def test_gemini_refuses_a_gif_by_field(ai: AsyncAIClient, simulator: Simulator) -> None:
    part = ContentPart(image=ImagePart(data=b"GIF89a" + bytes(8), media_type="image/gif"))
    with pytest.raises(AIServiceError) as caught:
        await ai.chat(ask("sim-gemini", "What is this?", part))
    assert caught.value.field_violations[0][0] == "messages[0].parts[0].image.media_type"
    assert not simulator.stats.received


# --- reasoning -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", REASONING)
async def test_reasoning_comes_back_signed_unary_and_streamed_alike(
    ai: AsyncAIClient, model: str
) -> None:
    request = ask(model, "think", reasoning=ReasoningConfig(effort="low"))
    unary, (text, blocks) = await both(ai, request)
    message = unary.choices[0].message
    assert message.content == text == "You said: think"
    thought = message.reasoning[0]
    assert thought.text.startswith("Reasoning: ") and len(thought.text.split()) == 9
    assert thought.signature
    assert blocks[0].text == thought.text and blocks[0].signature == thought.signature
    assert [b.signature for b in blocks] == [b.signature for b in message.reasoning]
    if model in ("sim-gemini", "sim-vertex"):
        assert unary.usage.reasoning_tokens == 9  # Gemini counts thoughts apart
    assert unary.usage.completion_tokens == 9 + 3


@pytest.mark.parametrize("model", ["sim-gemini", "sim-bedrock"])
async def test_reasoning_text_can_be_left_out_and_its_signature_kept(
    ai: AsyncAIClient, model: str
) -> None:
    request = ask(model, "think", reasoning=ReasoningConfig(effort="low", include_text=False))
    unary, (_, blocks) = await both(ai, request)
    assert all(not b.text for b in unary.choices[0].message.reasoning)
    assert all(not b.text for b in blocks)
    if model == "sim-bedrock":
        assert unary.choices[0].message.reasoning[0].signature


@pytest.mark.parametrize("model", REASONING)
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_a_tool_loop_with_reasoning_sends_its_signatures_back(
    ai: AsyncAIClient, simulator: Simulator, model: str, stream: bool
) -> None:
    request = ChatCompletionRequest(
        model=model,
        messages=[Message(role="user", content="weather in city Paris")],
        tools=[WEATHER],
        tool_choice=ToolChoice(mode="auto"),
        reasoning=ReasoningConfig(effort="low"),
    )
    if stream:
        chunks = [chunk async for chunk in ai.stream_chat(request)]
        _, blocks = streamed(chunks)
        pieces = [d for c in chunks for ch in c.choices for d in ch.delta.tool_calls]
        answer = Message(role="assistant", reasoning=blocks)
        call = answer.tool_calls.add(id=pieces[0].id, type="function")
        call.function.name = pieces[0].function.name
        call.function.arguments = "".join(p.function.arguments for p in pieces)
    else:
        answer = (await ai.chat(request)).choices[0].message
    assert answer.reasoning and answer.tool_calls
    request.messages.append(answer)
    request.messages.append(
        Message(role="tool", tool_call_id=answer.tool_calls[0].id, content="18C")
    )
    # The simulated API checks what comes back: the signature on Gemini's function call,
    # Claude's signed thinking first in the turn.
    reply = await ai.chat(request)
    assert reply.choices[0].message.content == "Tool result received: 18C"


async def test_gemini_refuses_another_providers_redacted_reasoning(ai: AsyncAIClient) -> None:
    answer = Message(role="assistant", content="earlier")
    answer.reasoning.add(redacted_data="opaque")
    request = ChatCompletionRequest(
        model="sim-gemini",
        messages=[
            Message(role="user", content="hi"),
            answer,
            Message(role="user", content="again"),
        ],
    )
    with pytest.raises(AIServiceError) as caught:
        await ai.chat(request)
    assert caught.value.field_violations[0][0] == "messages[1].reasoning[0].redacted_data"


# --- prompt caching ------------------------------------------------------------------------


async def test_bedrock_cache_points_write_then_read(
    ai: AsyncAIClient, simulator: Simulator
) -> None:
    long_system = " ".join(f"rule{i}" for i in range(300))
    request = ChatCompletionRequest(
        model="sim-bedrock",
        messages=[
            Message(role="system", content=long_system, cache_control=CacheControl()),
            Message(role="user", content="hello"),
        ],
    )
    first = await ai.chat(request)
    second = await ai.chat(request)
    system = simulator.stats.received[-1].body["system"]
    assert system == [{"text": long_system}, {"cachePoint": {"type": "default"}}]
    assert (first.usage.cache_write_tokens, first.usage.cached_tokens) == (300, 0)
    assert (second.usage.cache_write_tokens, second.usage.cached_tokens) == (0, 300)
    assert second.usage.prompt_tokens == first.usage.prompt_tokens


async def test_gemini_reports_its_implicit_cache_reads(ai: AsyncAIClient) -> None:
    history = [Message(role="user", content=" ".join(f"fact{i}" for i in range(1200)))]
    history.append(Message(role="assistant", content="noted"))
    first = ChatCompletionRequest(
        model="sim-gemini", messages=[*history, Message(role="user", content="one")]
    )
    second = ChatCompletionRequest(
        model="sim-gemini", messages=[*history, Message(role="user", content="two")]
    )
    assert (await ai.chat(first)).usage.cached_tokens == 0
    reused = await ai.chat(second)
    assert reused.usage.cached_tokens > 1024
    assert reused.usage.cached_tokens < reused.usage.prompt_tokens


# --- Embed ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(EMBEDDING_MODELS))
async def test_embed_on_every_cloud_embedding_model(
    ai: AsyncAIClient, simulator: Simulator, model: str
) -> None:
    dimensions = {"sim-titan-embed": 256, "sim-cohere-embed": None}.get(model, 64)
    request = EmbedRequest(model=model, inputs=["alpha beta", "gamma"])
    if dimensions is not None:
        request.dimensions = dimensions
    response = await ai.embed(request)
    assert [e.index for e in response.embeddings] == [0, 1]
    assert all(len(e.values) == (dimensions or 256) for e in response.embeddings)
    assert response.embeddings[0].values != response.embeddings[1].values
    _, upstream = EMBEDDING_MODELS[model]
    assert response.model == upstream
    if model in ("sim-azure-embed", "sim-vertex-embed", "sim-titan-embed"):
        assert response.usage.prompt_tokens == 3  # the APIs that count tokens
    del request.inputs[1:]
    request.encoding_format = "base64"
    packed = (await ai.embed(request)).embeddings[0].data
    assert struct.unpack(f"<{len(packed) // 4}f", packed) == pytest.approx(
        list(response.embeddings[0].values)
    )


async def test_cohere_on_bedrock_takes_no_dimensions(ai: AsyncAIClient) -> None:
    with pytest.raises(AIServiceError) as caught:
        await ai.embed(EmbedRequest(model="sim-cohere-embed", inputs=["x"], dimensions=64))
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "dimensions" in caught.value.message

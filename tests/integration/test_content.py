"""Content beyond text through the real gateway on the embedded default and the real
simulator: images, documents and audio, reasoning (with a two-turn tool loop that needs
its signature back), prompt caching, capabilities in ListModels and the refusals of what
a model lacks, and Embed."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ai_service.config import DEMO_KEY, GatewayConfig, embedded_default, parse_config, with_sections
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import AIServiceError, AsyncAIClient
from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import (
    AudioPart,
    CacheControl,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ContentPart,
    DocumentPart,
    EmbedRequest,
    FunctionDefinition,
    ImagePart,
    Message,
    ReasoningBlock,
    ReasoningConfig,
    RequestOptions,
    Tool,
)
from tests.integration.test_observability import scrape, value

# The smallest real PNG: a 1x1 transparent pixel.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28)
VISION_MODELS = ("sim-gpt", "sim-claude", "sim-llava")
REASONING_MODELS = ("sim-gpt", "sim-claude", "sim-llava")
WEATHER = Tool(
    function=FunctionDefinition(
        name="get_weather",
        parameters_json='{"type": "object", "properties": {"city": {"type": "string"}}}',
    )
)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as simulator:
        yield simulator


def embedded(sim: Simulator) -> GatewayConfig:
    """The embedded default on `sim`, with the response cache on and no metrics port."""
    config = embedded_default(sim.base_url, listen="127.0.0.1:0")
    return with_sections(
        config,
        {"cache": {"enabled": True}, "observability": {"metrics": {"enabled": False}}},
    )


@pytest.fixture
async def gateway(sim: Simulator) -> AsyncIterator[Gateway]:
    async with Gateway(embedded(sim)) as running:
        yield running


@pytest.fixture
async def ai(gateway: Gateway) -> AsyncIterator[AsyncAIClient]:
    async with AsyncAIClient(gateway.address, DEMO_KEY, timeout=10) as client:
        yield client


def image_part(data: bytes = PNG) -> ContentPart:
    return ContentPart(image=ImagePart(data=data, media_type="image/png"))


def ask(model: str, text: str, *parts: ContentPart, **fields: Any) -> ChatCompletionRequest:
    message = Message(role="user", content=text, parts=parts)
    return ChatCompletionRequest(model=model, messages=[message], **fields)


async def refused(call: Any) -> AIServiceError:
    with pytest.raises(AIServiceError) as caught:
        await call
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT, caught.value
    return caught.value


def streamed(chunks: list[ChatCompletionChunk]) -> tuple[str, list[ReasoningBlock]]:
    """The text and the reasoning blocks a stream built."""
    text, blocks = "", []
    for chunk in chunks:
        for choice in chunk.choices:
            text += choice.delta.content
            for piece in choice.delta.reasoning:
                while len(blocks) <= piece.index:
                    blocks.append(ReasoningBlock())
                block = blocks[piece.index]
                block.text += piece.text
                block.signature += piece.signature
                block.redacted_data += piece.redacted_data
    return text, blocks


# --- ListModels ------------------------------------------------------------------------


async def test_list_models_shows_each_models_capabilities(ai: AsyncAIClient) -> None:
    models = {model.id: model for model in await ai.list_models()}
    gpt, claude, llama = models["sim-gpt"], models["sim-claude"], models["sim-llama"]
    assert gpt.capabilities.vision and gpt.capabilities.audio_input
    assert gpt.capabilities.context_window == 128000
    assert claude.capabilities.documents and claude.capabilities.prompt_caching
    assert not claude.capabilities.audio_input and not claude.capabilities.embeddings
    assert not llama.capabilities.vision and not llama.capabilities.reasoning
    assert llama.capabilities.tools
    assert models["sim-llava"].capabilities.vision
    assert models["sim-embed"].capabilities.embeddings
    assert models["sim-minilm"].capabilities.embeddings
    assert not gpt.capabilities.embeddings


# --- media -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", VISION_MODELS)
async def test_an_image_reaches_every_vision_model_and_is_described(
    ai: AsyncAIClient, model: str
) -> None:
    request = ask(model, "What is this?", image_part())
    response = await ai.chat(request)
    expected = f"You said: What is this? You sent 1 image (image/png, {len(PNG)} bytes)."
    assert response.choices[0].message.content == expected
    text, _ = streamed([chunk async for chunk in ai.stream_chat(request)])
    assert text == expected


async def test_a_text_only_model_refuses_an_image_naming_the_field(
    ai: AsyncAIClient, sim: Simulator
) -> None:
    error = await refused(ai.chat(ask("sim-llama", "What is this?", image_part())))
    ((field, description),) = error.field_violations
    assert field == "messages[0].parts[0].image"
    assert "'sim-llama' does not take images" in description
    assert not sim.stats.received  # no upstream call


async def test_documents_reach_openai_and_anthropic_and_ollama_refuses_them(
    ai: AsyncAIClient,
) -> None:
    part = ContentPart(
        document=DocumentPart(data=PDF, media_type="application/pdf", name="notes.pdf")
    )
    gpt = await ai.chat(ask("sim-gpt", "Summarise", part))
    assert gpt.choices[0].message.content == (
        f'You said: Summarise You sent 1 document (application/pdf, {len(PDF)} bytes, "notes.pdf").'
    )
    claude = await ai.chat(ask("sim-claude", "Summarise", part))
    assert claude.choices[0].message.content == gpt.choices[0].message.content
    error = await refused(ai.chat(ask("sim-llava", "Summarise", part)))
    assert error.field_violations[0][0] == "messages[0].parts[0].document"


async def test_audio_reaches_openai_and_anthropic_refuses_it(ai: AsyncAIClient) -> None:
    part = ContentPart(audio=AudioPart(data=WAV, format="wav"))
    response = await ai.chat(ask("sim-gpt", "Transcribe", part))
    assert response.choices[0].message.content == (
        f"You said: Transcribe You sent 1 audio (audio/wav, {len(WAV)} bytes)."
    )
    error = await refused(ai.chat(ask("sim-claude", "Transcribe", part)))
    assert error.field_violations[0][0] == "messages[0].parts[0].audio"


async def test_text_parts_and_several_media_in_order(ai: AsyncAIClient) -> None:
    request = ask(
        "sim-gpt",
        "",
        ContentPart(text="Compare"),
        image_part(),
        ContentPart(image=ImagePart(url="https://example.com/cat.png", detail="low")),
    )
    response = await ai.chat(request)
    assert response.choices[0].message.content == (
        f"You said: Compare You sent 2 images (image/png, {len(PNG)} bytes; by URL)."
    )


async def test_the_response_cache_tells_apart_requests_that_differ_only_in_an_image(
    ai: AsyncAIClient, sim: Simulator
) -> None:
    options = RequestOptions(cache_ttl_seconds=60)
    first = ask("sim-gpt", "Same", image_part(), temperature=0, options=options)
    other = ask("sim-gpt", "Same", image_part(PNG + b"x"), temperature=0, options=options)
    answers = [await ai.chat(r) for r in (first, other, first)]
    assert answers[0].choices[0].message.content != answers[1].choices[0].message.content
    assert answers[2].cached and not answers[1].cached
    assert len(sim.stats.received) == 2


@pytest.mark.parametrize(
    ("part", "field"),
    [
        (ContentPart(image=ImagePart(data=PNG)), "messages[0].parts[0].image.media_type"),
        (
            ContentPart(image=ImagePart(data=PNG, media_type="image/tiff")),
            "messages[0].parts[0].image.media_type",
        ),
        (ContentPart(image=ImagePart(url="ftp://x/y.png")), "messages[0].parts[0].image.url"),
        (ContentPart(audio=AudioPart(data=WAV, format="ogg")), "messages[0].parts[0].audio.format"),
        (ContentPart(), "messages[0].parts[0]"),
        (
            ContentPart(text="x", cache_control=CacheControl(ttl="2h")),
            "messages[0].parts[0].cache_control.ttl",
        ),
    ],
)
async def test_malformed_parts_are_refused_by_field(
    ai: AsyncAIClient, part: ContentPart, field: str
) -> None:
    error = await refused(ai.chat(ask("sim-gpt", "hi", part)))
    assert error.field_violations[0][0] == field


async def test_media_only_on_user_messages(ai: AsyncAIClient) -> None:
    request = ChatCompletionRequest(
        model="sim-gpt",
        messages=[Message(role="system", content="be brief", parts=[image_part()])],
    )
    error = await refused(ai.chat(request))
    assert error.field_violations[0] == (
        "messages[0].parts[0].image",
        "is only allowed for role 'user'",
    )


async def test_developer_messages_reach_every_provider(ai: AsyncAIClient) -> None:
    for model in ("sim-gpt", "sim-claude", "sim-llama"):
        request = ChatCompletionRequest(
            model=model,
            messages=[
                Message(role="developer", content="Answer tersely."),
                Message(role="user", content="hello"),
            ],
        )
        assert (await ai.chat(request)).choices[0].message.content == "You said: hello"


# --- reasoning -------------------------------------------------------------------------


async def test_reasoning_on_openai_is_reported_as_reasoning_tokens(ai: AsyncAIClient) -> None:
    response = await ai.chat(ask("sim-gpt", "think", reasoning=ReasoningConfig(effort="low")))
    assert response.usage.reasoning_tokens == 9  # "Reasoning:" and 8 words
    assert response.usage.completion_tokens == 9 + 3
    assert not response.choices[0].message.reasoning  # OpenAI returns no text


async def test_reasoning_on_anthropic_comes_with_a_signature(ai: AsyncAIClient) -> None:
    response = await ai.chat(
        ask("sim-claude", "think", reasoning=ReasoningConfig(budget_tokens=2048))
    )
    (block,) = response.choices[0].message.reasoning
    assert block.text.startswith("Reasoning: ") and len(block.text.split()) == 9
    assert block.signature
    assert response.choices[0].message.content == "You said: think"


async def test_reasoning_on_ollama_is_its_thinking(ai: AsyncAIClient) -> None:
    response = await ai.chat(ask("sim-llava", "think", reasoning=ReasoningConfig(effort="high")))
    (block,) = response.choices[0].message.reasoning
    assert len(block.text.split()) == 33 and not block.signature


async def test_a_model_without_reasoning_refuses_it(ai: AsyncAIClient) -> None:
    error = await refused(
        ai.chat(ask("sim-llama", "think", reasoning=ReasoningConfig(effort="low")))
    )
    assert error.field_violations[0][0] == "reasoning"


@pytest.mark.parametrize("model", ("sim-claude", "sim-llava"))
async def test_streamed_reasoning_comes_as_deltas_before_the_text(
    ai: AsyncAIClient, model: str
) -> None:
    request = ask(model, "think", reasoning=ReasoningConfig(effort="medium"))
    unary = await ai.chat(request)
    stream = ai.stream_chat(request)
    chunks = [chunk async for chunk in stream]
    text, blocks = streamed(chunks)
    assert text == unary.choices[0].message.content
    assert blocks[0].text == unary.choices[0].message.reasoning[0].text
    assert len([c for c in chunks if any(ch.delta.reasoning for ch in c.choices)]) > 1
    first_text = next(i for i, c in enumerate(chunks) if any(ch.delta.content for ch in c.choices))
    assert all(not ch.delta.reasoning for c in chunks[first_text:] for ch in c.choices)
    assert chunks[-1].usage == unary.usage


async def test_the_streams_trailer_carries_the_usage_details(gateway: Gateway) -> None:
    request = ask("sim-gpt", "think", reasoning=ReasoningConfig(effort="low"))
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        call = stub.StreamChatCompletion(
            request, metadata=(("authorization", f"Bearer {DEMO_KEY}"),)
        )
        chunks = [chunk async for chunk in call]
        trailers = dict(await call.trailing_metadata())
    usage = chunks[-1].usage
    assert trailers["x-ai-usage"] == (
        f"prompt={usage.prompt_tokens},completion={usage.completion_tokens},"
        f"total={usage.total_tokens},reasoning=9"
    )


async def tool_loop(ai: AsyncAIClient, *, stream: bool) -> tuple[Message, ChatCompletionRequest]:
    """Turn one of a tool loop with thinking on: the assistant's message as the answer
    gave it, and the request it answered."""
    request = ask(
        "sim-claude",
        "weather in city Paris",
        tools=[WEATHER],
        reasoning=ReasoningConfig(budget_tokens=1024),
    )
    if stream:
        chunks = [chunk async for chunk in ai.stream_chat(request)]
        _, blocks = streamed(chunks)
        calls = [d for c in chunks for ch in c.choices for d in ch.delta.tool_calls]
        message = Message(role="assistant", reasoning=blocks)
        call = message.tool_calls.add(id=calls[0].id, type="function")
        call.function.name = calls[0].function.name
        call.function.arguments = "".join(d.function.arguments for d in calls)
        return message, request
    response = await ai.chat(request)
    assert response.choices[0].finish_reason == "tool_calls"
    return response.choices[0].message, request


@pytest.mark.parametrize("stream", [False, True])
async def test_a_two_turn_tool_loop_keeps_its_thinking_signature(
    ai: AsyncAIClient, stream: bool
) -> None:
    assistant, request = await tool_loop(ai, stream=stream)
    (block,) = assistant.reasoning
    assert block.signature
    call = assistant.tool_calls[0]
    request.messages.extend(
        [assistant, Message(role="tool", tool_call_id=call.id, content="18C and sunny")]
    )
    answer = await ai.chat(request)
    assert answer.choices[0].message.content == "Tool result received: 18C and sunny"


async def test_a_tampered_or_missing_thinking_block_is_the_upstreams_400(
    ai: AsyncAIClient,
) -> None:
    assistant, request = await tool_loop(ai, stream=False)
    call = assistant.tool_calls[0]
    result = Message(role="tool", tool_call_id=call.id, content="18C")
    tampered = Message()
    tampered.CopyFrom(assistant)
    tampered.reasoning[0].text += " (edited)"
    edited = ChatCompletionRequest()
    edited.CopyFrom(request)
    edited.messages.extend([tampered, result])
    error = await refused(ai.chat(edited))
    assert "signature" in error.message
    dropped = ChatCompletionRequest()
    dropped.CopyFrom(request)
    del assistant.reasoning[:]
    dropped.messages.extend([assistant, result])
    error = await refused(ai.chat(dropped))
    assert "Expected `thinking`" in error.message


async def test_redacted_reasoning_round_trips_byte_for_byte(ai: AsyncAIClient) -> None:
    request = ask(
        "sim-claude",
        "weather in city Oslo /redacted",
        tools=[WEATHER],
        reasoning=ReasoningConfig(effort="low"),
    )
    assistant = (await ai.chat(request)).choices[0].message
    redacted, signed = assistant.reasoning
    assert redacted.redacted_data and not redacted.text
    assert signed.signature
    request.messages.extend(
        [assistant, Message(role="tool", tool_call_id=assistant.tool_calls[0].id, content="3C")]
    )
    assert (await ai.chat(request)).choices[0].message.content == "Tool result received: 3C"


async def test_reasoning_from_another_provider_cannot_go_to_anthropic(ai: AsyncAIClient) -> None:
    request = ChatCompletionRequest(
        model="sim-claude",
        messages=[
            Message(role="user", content="hi"),
            Message(role="assistant", content="hello", reasoning=[ReasoningBlock(text="hmm")]),
            Message(role="user", content="again"),
        ],
    )
    error = await refused(ai.chat(request))
    assert error.field_violations[0][0] == "messages[1].reasoning[0].signature"


# --- prompt caching --------------------------------------------------------------------


async def test_anthropic_reports_cache_writes_then_reads_of_a_marked_prefix(
    ai: AsyncAIClient,
) -> None:
    system = Message(
        role="system",
        content="You are a patient tutor. " * 20,
        cache_control=CacheControl(ttl="1h"),
    )

    def request(text: str) -> ChatCompletionRequest:
        return ChatCompletionRequest(
            model="sim-claude", messages=[system, Message(role="user", content=text)]
        )

    first = (await ai.chat(request("one"))).usage
    assert first.cache_write_tokens == 100 and first.cached_tokens == 0
    second = (await ai.chat(request("two"))).usage
    assert second.cached_tokens == 100 and second.cache_write_tokens == 0
    assert second.prompt_tokens == first.prompt_tokens  # the whole prompt, cached or not


async def test_openai_caches_long_prefixes_on_its_own(ai: AsyncAIClient) -> None:
    long = Message(role="system", content="word " * 1100)

    def request(text: str) -> ChatCompletionRequest:
        return ChatCompletionRequest(
            model="sim-gpt", messages=[long, Message(role="user", content=text)]
        )

    assert (await ai.chat(request("one"))).usage.cached_tokens == 0
    assert (await ai.chat(request("two"))).usage.cached_tokens == 1024


async def test_a_model_without_prompt_caching_refuses_a_cache_mark(ai: AsyncAIClient) -> None:
    request = ask("sim-llama", "hi", ContentPart(text="x", cache_control=CacheControl()))
    error = await refused(ai.chat(request))
    assert error.field_violations[0][0] == "messages[0].parts[0].cache_control"


# --- routing by capability -------------------------------------------------------------


async def test_routing_skips_deployments_that_cannot_take_the_request(sim: Simulator) -> None:
    tree: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0"},
        "observability": {"metrics": {"enabled": False}},
        "auth": {"keys": [{"name": "demo", "key": DEMO_KEY}]},
        "providers": [
            {"name": "oai", "kind": "openai", "base_url": f"{sim.base_url}/v1"},
            {"name": "oll", "kind": "ollama", "base_url": sim.base_url},
        ],
        "models": [
            {
                "name": "mixed",
                "provider": "oll",
                "upstream_model": "text-1",
                "capabilities": {"vision": False},
                "fallbacks": ["seeing"],
            },
            {"name": "seeing", "provider": "oai", "upstream_model": "vision-1"},
        ],
    }
    async with (
        Gateway(parse_config(tree, env={})) as gateway,
        AsyncAIClient(gateway.address, DEMO_KEY, timeout=10) as ai,
    ):
        text = await ai.chat(ask("mixed", "hi"))
        image = await ai.chat(ask("mixed", "hi", image_part()))
    assert text.deployment == "oll/text-1"
    assert image.deployment == "oai/vision-1"


# --- Embed -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ("sim-embed", "sim-minilm"))
async def test_embed_answers_one_vector_per_input_as_floats_or_bytes(
    ai: AsyncAIClient, model: str
) -> None:
    inputs = ["the cat sat", "on the mat", "the cat sat"]
    floats = await ai.embed(EmbedRequest(model=model, inputs=inputs, dimensions=16))
    assert [e.index for e in floats.embeddings] == [0, 1, 2]
    assert all(len(e.values) == 16 for e in floats.embeddings)
    assert floats.embeddings[0].values == floats.embeddings[2].values
    assert floats.embeddings[0].values != floats.embeddings[1].values
    assert floats.usage.prompt_tokens == 9
    assert floats.deployment.endswith("-1")
    packed = await ai.embed(
        EmbedRequest(model=model, inputs=inputs, dimensions=16, encoding_format="base64")
    )
    for as_bytes, as_floats in zip(packed.embeddings, floats.embeddings, strict=True):
        assert list(struct.unpack("<16f", as_bytes.data)) == list(as_floats.values)


async def test_embed_on_anthropic_is_refused_plainly(ai: AsyncAIClient, sim: Simulator) -> None:
    error = await refused(ai.embed(EmbedRequest(model="sim-claude", inputs=["x"])))
    assert error.field_violations == [
        ("model", "model 'sim-claude' is served by anthropic, which has no embeddings API")
    ]
    error = await refused(ai.embed(EmbedRequest(model="sim-gpt", inputs=["x"])))
    assert "not an embedding model" in error.field_violations[0][1]
    assert not sim.stats.received


async def test_every_empty_input_is_named_at_once(ai: AsyncAIClient) -> None:
    error = await refused(ai.embed(EmbedRequest(model="sim-embed", inputs=["a", "", "b", ""])))
    assert error.field_violations == [("inputs[1]", "is empty"), ("inputs[3]", "is empty")]


async def test_embed_fails_over_like_chat(sim: Simulator) -> None:
    config = embedded(sim)
    sim.add_fault(FaultRule(kind="status", status=503, path="/v1/embeddings", times=1))
    async with (
        Gateway(config) as gateway,
        AsyncAIClient(gateway.address, DEMO_KEY, timeout=10) as ai,
    ):
        response = await ai.embed(EmbedRequest(model="sim-embed", inputs=["x"]))
    assert len(response.embeddings) == 1
    assert len([r for r in sim.stats.received if r.path == "/v1/embeddings"]) == 2


# --- audit and metrics -----------------------------------------------------------------


async def test_audit_and_metrics_record_part_kinds_sizes_and_token_details(
    sim: Simulator, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    config = with_sections(
        embedded(sim),
        {
            "observability": {
                "metrics": {"enabled": True, "listen": "127.0.0.1:0"},
                "audit": {"path": str(audit), "include_prompts": True},
            }
        },
    )
    gateway = Gateway(config)
    await gateway.start()
    try:
        async with AsyncAIClient(gateway.address, DEMO_KEY, timeout=10) as ai:
            await ai.chat(
                ask(
                    "sim-gpt",
                    "look",
                    image_part(),
                    ContentPart(image=ImagePart(url="https://example.com/secret?token=abc")),
                    reasoning=ReasoningConfig(effort="low"),
                )
            )
        samples = await scrape(gateway)
    finally:
        await gateway.stop()  # the audit log is flushed
    (record,) = [json.loads(line) for line in audit.read_text().splitlines()]
    assert record["parts"] == [
        {"message": 0, "part": 0, "kind": "image", "media_type": "image/png", "bytes": len(PNG)},
        {"message": 0, "part": 1, "kind": "image", "source": "url"},
    ]
    assert record["reasoning_tokens"] == 9
    text = audit.read_text()
    assert base64.b64encode(PNG).decode()[:16] not in text and "token=abc" not in text
    assert value(samples, "gen_ai_client_token_usage_sum", gen_ai_token_type="reasoning") == 9
    assert value(samples, "gen_ai_client_token_usage_count", gen_ai_token_type="cache_read") == 0


async def test_a_cached_answer_keeps_its_reasoning_unary_and_replayed(ai: AsyncAIClient) -> None:
    request = ask("sim-claude", "think", seed=7, reasoning=ReasoningConfig(effort="low"))
    streamed_first = [chunk async for chunk in ai.stream_chat(request)]
    _, blocks = streamed(streamed_first)
    cached = await ai.chat(request)
    assert cached.cached
    assert list(cached.choices[0].message.reasoning) == blocks
    replayed = [chunk async for chunk in ai.stream_chat(request)]
    assert replayed[0].cached and streamed(replayed)[1] == blocks


async def test_a_cache_mark_on_an_empty_content_is_refused_not_lost(ai: AsyncAIClient) -> None:
    request = ChatCompletionRequest(
        model="sim-claude",
        messages=[
            Message(
                role="user",
                parts=[ContentPart(text="hello")],
                cache_control=CacheControl(),
            )
        ],
    )
    error = await refused(ai.chat(request))
    assert error.field_violations[0][0] == "messages[0].cache_control"

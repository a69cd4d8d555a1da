"""The official openai, anthropic and ollama Python SDKs, pointed at the simulator, parse its
content answers — media described, reasoning (Anthropic's signed thinking, streamed and sent
back on a tool loop), prompt-cache usage, embeddings (OpenAI's base64 default) — and the raw
bodies validate against the SDKs' own pydantic types, strictly."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ai_service.simulator import Simulator
from tests.integration.test_content import PDF, PNG

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
ollama = pytest.importorskip("ollama")

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as simulator:
        yield simulator


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- openai -------------------------------------------------------------------------------


@pytest.fixture
async def oai(sim: Simulator) -> AsyncIterator[Any]:
    client = openai.AsyncOpenAI(base_url=f"{sim.base_url}/v1", api_key="x", max_retries=0)
    yield client
    await client.close()


async def test_openai_parses_a_content_answer_with_reasoning_tokens(oai: Any) -> None:
    raw = await oai.chat.completions.with_raw_response.create(
        model="o4-mini",
        reasoning_effort="low",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What are these?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{b64(PNG)}", "detail": "low"},
                    },
                    {
                        "type": "file",
                        "file": {
                            "filename": "a.pdf",
                            "file_data": f"data:application/pdf;base64,{b64(PDF)}",
                        },
                    },
                    {"type": "input_audio", "input_audio": {"data": b64(b"RIFF"), "format": "wav"}},
                ],
            },
        ],
    )
    completion = raw.parse()
    openai.types.chat.ChatCompletion.model_validate(raw.http_response.json(), strict=True)
    assert completion.choices[0].message.content == (
        f"You said: What are these? You sent 1 image (image/png, {len(PNG)} bytes), "
        f'1 document (application/pdf, {len(PDF)} bytes, "a.pdf") and '
        f"1 audio (audio/wav, 4 bytes)."
    )
    assert completion.usage.completion_tokens_details.reasoning_tokens == 9
    assert completion.usage.prompt_tokens_details.cached_tokens == 0


async def test_openai_streams_with_usage_and_reports_cached_prefixes(oai: Any) -> None:
    messages = [
        {"role": "system", "content": "word " * 1100},
        {"role": "user", "content": "hello"},
    ]
    await oai.chat.completions.create(model="gpt-4o", messages=messages)
    stream = await oai.chat.completions.create(
        model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        openai.types.chat.ChatCompletionChunk.model_validate(chunk.model_dump(), strict=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: hello"
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 1024


async def test_openai_embeddings_decode_the_default_base64(oai: Any) -> None:
    packed = await oai.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    floats = await oai.embeddings.create(
        model="text-embedding-3-small", input=["a b", "c"], encoding_format="float"
    )
    assert [len(item.embedding) for item in packed.data] == [256, 256]
    assert packed.data[0].embedding == floats.data[0].embedding
    assert packed.usage.prompt_tokens == 3
    short = await oai.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="a", dimensions=8, encoding_format="float"
    )
    openai.types.CreateEmbeddingResponse.model_validate(short.http_response.json(), strict=True)
    assert len(short.parse().data[0].embedding) == 8


# --- anthropic ----------------------------------------------------------------------------


@pytest.fixture
async def claude(sim: Simulator) -> AsyncIterator[Any]:
    client = anthropic.AsyncAnthropic(base_url=sim.base_url, api_key="x", max_retries=0)
    yield client
    await client.close()


async def _validated(raw: Any) -> Any:
    anthropic.types.Message.model_validate(raw.http_response.json(), strict=True)
    return await raw.parse()


async def test_anthropic_parses_media_blocks_and_signed_thinking(claude: Any) -> None:
    raw = await claude.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)},
                    },
                    {
                        "type": "document",
                        "source": {"type": "url", "url": "https://example.com/a.pdf"},
                    },
                ],
            }
        ],
    )
    message = await _validated(raw)
    thinking, text = message.content
    assert isinstance(thinking, anthropic.types.ThinkingBlock) and thinking.signature
    assert text.text == (
        f"You said: Describe You sent 1 image (image/png, {len(PNG)} bytes) and "
        f"1 document (by URL)."
    )


async def test_anthropic_streamed_thinking_goes_back_on_the_next_tool_turn(claude: Any) -> None:
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather in city Rome"}]
    thinking = {"type": "enabled", "budget_tokens": 1024}
    async with claude.messages.stream(
        model="claude-sonnet-4-5", max_tokens=2048, thinking=thinking, tools=tools,
        messages=messages,
    ) as stream:  # fmt: skip
        first = await stream.get_final_message()
    anthropic.types.Message.model_validate(first.model_dump(), strict=True)
    block, call = first.content
    assert block.type == "thinking" and block.signature and call.type == "tool_use"
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21C"}],
        },
    ]
    raw = await claude.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=2048, thinking=thinking, tools=tools,
        messages=messages,
    )  # fmt: skip
    assert (await _validated(raw)).content[-1].text == "Tool result received: 21C"
    messages[1]["content"][0]["thinking"] += "!"
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        await claude.messages.create(
            model="claude-sonnet-4-5", max_tokens=2048, thinking=thinking, tools=tools,
            messages=messages,
        )  # fmt: skip


async def test_anthropic_reports_cache_writes_then_reads(claude: Any) -> None:
    system = [
        {"type": "text", "text": "Long instructions. " * 50, "cache_control": {"type": "ephemeral"}}
    ]
    usages = []
    for text in ("one", "two"):
        raw = await claude.messages.with_raw_response.create(
            model="claude-sonnet-4-5", max_tokens=100, system=system,
            messages=[{"role": "user", "content": text}],
        )  # fmt: skip
        usages.append((await _validated(raw)).usage)
    assert (usages[0].cache_creation_input_tokens, usages[0].cache_read_input_tokens) == (100, 0)
    assert (usages[1].cache_creation_input_tokens, usages[1].cache_read_input_tokens) == (0, 100)


# --- ollama -------------------------------------------------------------------------------


@pytest.fixture
def llama(sim: Simulator) -> Any:
    return ollama.AsyncClient(host=sim.base_url)


async def test_ollama_parses_images_and_thinking(llama: Any) -> None:
    response = await llama.chat(
        model="llava",
        think=True,
        messages=[{"role": "user", "content": "What is it?", "images": [PNG]}],
    )
    ollama.ChatResponse.model_validate(response.model_dump())
    assert response.message.thinking.startswith("Reasoning: ")
    assert response.message.content == (
        f"You said: What is it? You sent 1 image (image/png, {len(PNG)} bytes)."
    )


async def test_ollama_streams_thinking_before_content(llama: Any) -> None:
    stream = await llama.chat(
        model="qwen3", think="low", stream=True, messages=[{"role": "user", "content": "hi"}]
    )
    parts = [part async for part in stream]
    thinking = "".join(p.message.thinking or "" for p in parts)
    content = "".join(p.message.content or "" for p in parts)
    assert len(thinking.split()) == 9 and content == "You said: hi"
    assert parts[-1].done and parts[-1].eval_count == 9 + 3


async def test_ollama_embed(llama: Any) -> None:
    response = await llama.embed(model="all-minilm", input=["a", "b c"], dimensions=4)
    ollama.EmbedResponse.model_validate(response.model_dump())
    assert [len(vector) for vector in response.embeddings] == [4, 4]
    assert response.prompt_eval_count == 3


async def test_the_simulator_refuses_a_bad_image_as_ollama_does(sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        answer = await http.post(
            "/api/chat",
            json={"model": "llava", "messages": [{"role": "user", "images": ["@@"]}]},
        )
    assert answer.status_code == 400 and "error" in answer.json()

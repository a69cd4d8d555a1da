"""The Anthropic and Ollama adapters' content — image and document blocks, thinking with
its signature, cache_control, cache usage; Ollama's images, think, thinking and embed —
compared with the API references' shapes (tests/fixtures/README.md)."""

from __future__ import annotations

import base64

import orjson
import pytest

from ai_service.config import MediaFetchSettings
from ai_service.errors import InvalidRequest
from ai_service.providers import anthropic, ollama
from ai_service.providers.base import Deployment
from ai_service.providers.http.fetch import MediaFetcher
from ai_service_protos.ai_service_pb2 import (
    AudioPart,
    CacheControl,
    ChatCompletionRequest,
    ContentPart,
    DocumentPart,
    EmbedRequest,
    FunctionDefinition,
    ImagePart,
    Message,
    ReasoningBlock,
    ReasoningConfig,
    Tool,
    ToolCall,
    ToolChoice,
)
from tests.fixtures import (
    REFUSED_FETCHES,
    RecordedHttp,
    load_bytes,
    load_json,
    refused_before_sending,
    settings,
)

PNG = base64.b64decode("iVBORw0KGgo=")
PDF = base64.b64decode("JVBERi0xLjQ=")
ANT = "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
SIGNATURE = "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL...."
REDACTED = (
    "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB5URj"
)


def claude_request() -> ChatCompletionRequest:
    call = ToolCall(id="toolu_01A09q90qw90lq917835lq9", type="function")
    call.function.name = "get_weather"
    call.function.arguments = '{"location": "San Francisco, CA"}'
    schema = {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    }
    return ChatCompletionRequest(
        max_tokens=16000,
        messages=[
            Message(
                role="system",
                content="You are an AI assistant tasked with analyzing literary works.",
                cache_control=CacheControl(type="ephemeral", ttl="1h"),
            ),
            Message(
                role="user",
                content="Describe these, then look up the weather.",
                parts=[
                    ContentPart(image=ImagePart(data=PNG, media_type="image/png")),
                    ContentPart(image=ImagePart(url=ANT)),
                    ContentPart(
                        document=DocumentPart(
                            data=PDF, media_type="application/pdf", name="draconomicon.pdf"
                        ),
                        cache_control=CacheControl(),
                    ),
                    ContentPart(
                        document=DocumentPart(data=b"The grass is green.", media_type="text/plain")
                    ),
                ],
            ),
            Message(
                role="assistant",
                tool_calls=[call],
                reasoning=[
                    ReasoningBlock(text="Let me analyze this step by step...", signature=SIGNATURE),
                    ReasoningBlock(redacted_data=REDACTED),
                ],
            ),
            Message(role="tool", tool_call_id=call.id, content="15 degrees"),
        ],
        tools=[
            Tool(
                function=FunctionDefinition(
                    name="get_weather",
                    description="Get the current weather in a given location",
                    parameters_json=orjson.dumps(schema).decode(),
                ),
                cache_control=CacheControl(),
            )
        ],
        reasoning=ReasoningConfig(budget_tokens=10000),
    )


def test_anthropic_blocks_thinking_and_cache_marks_are_the_references_shapes() -> None:
    body = anthropic.request_body(claude_request(), "claude-sonnet-4-5", 1024, stream=False)
    assert body == load_json("anthropic/content_request.json")


def test_anthropic_default_max_tokens_leaves_room_for_the_budget() -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")], reasoning=ReasoningConfig(effort="medium")
    )
    body = anthropic.request_body(request, "m", 1024, stream=False)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert body["max_tokens"] == 1024 + 4096
    request.reasoning.include_text = False
    assert anthropic.request_body(request, "m", 1024, stream=False)["thinking"]["display"] == (
        "omitted"
    )
    off = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")], reasoning=ReasoningConfig(off=True)
    )
    assert anthropic.request_body(off, "m", 1024, stream=False)["thinking"] == {"type": "disabled"}


def test_a_system_prompt_without_marks_stays_a_string() -> None:
    request = ChatCompletionRequest(
        messages=[
            Message(role="system", content="a"),
            Message(role="developer", content="b"),
            Message(role="user", content="hi"),
        ]
    )
    assert anthropic.request_body(request, "m", 1024, stream=False)["system"] == "a\n\nb"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: setattr(r, "max_tokens", 10000), "reasoning.budget_tokens"),
        (lambda r: setattr(r, "temperature", 0.5), "temperature"),
        (lambda r: setattr(r, "top_p", 0.5), "top_p"),
        (lambda r: r.tool_choice.CopyFrom(ToolChoice(mode="required")), "tool_choice.mode"),
        (
            lambda r: r.messages[2].reasoning[0].ClearField("signature"),
            "messages[2].reasoning[0].signature",
        ),
        (
            lambda r: r.messages[1].parts[0].image.__setattr__("detail", "high"),
            "messages[1].parts[0].image.detail",
        ),
    ],
)
def test_anthropic_refuses_what_its_api_refuses(change: object, field: str) -> None:
    request = claude_request()
    change(request)  # type: ignore[operator]
    refusal = anthropic.request_refusal(request)
    assert isinstance(refusal, InvalidRequest) and refusal.field == field


def test_anthropic_thinking_and_cache_usage_are_read() -> None:
    response = anthropic.response_from_anthropic(load_json("anthropic/thinking_response.json"))
    message = response.choices[0].message
    assert list(message.reasoning) == [
        ReasoningBlock(text="Let me analyze this step by step...", signature=SIGNATURE),
        ReasoningBlock(redacted_data=REDACTED),
    ]
    assert message.content == "Based on my analysis..."
    usage = response.usage
    assert (usage.prompt_tokens, usage.cache_write_tokens, usage.cached_tokens) == (
        21 + 188086,
        188086,
        0,
    )


async def test_anthropic_thinking_and_signature_deltas_stream_as_reasoning() -> None:
    http = RecordedHttp(load_bytes("anthropic/stream_thinking.sse"), piece=4096)
    provider = anthropic.AnthropicProvider(settings("anthropic"), http)
    request = ChatCompletionRequest(messages=[Message(role="user", content="27 * 453?")])
    chunks = [c async for c in provider.stream(request, Deployment("a", "claude-sonnet-4-5"))]
    pieces = [d for c in chunks for ch in c.choices for d in ch.delta.reasoning]
    first = [p for p in pieces if p.index == 0]
    assert "".join(p.text for p in first) == (
        "Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3"
    )
    assert [p.signature for p in first if p.signature] == [
        "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."
    ]
    (redacted,) = [p for p in pieces if p.index == 1]
    assert redacted.redacted_data.startswith("EmwKAhgB")
    assert "".join(ch.delta.content for c in chunks for ch in c.choices) == "27 * 453 = 12,231"
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == (
        25 + 2048,
        2048,
        100,
    )


def llava_request() -> ChatCompletionRequest:
    return ChatCompletionRequest(
        messages=[
            Message(role="developer", content="Answer in one sentence."),
            Message(
                role="user",
                content="what is in this image?",
                parts=[ContentPart(image=ImagePart(data=PNG, media_type="image/png"))],
            ),
            Message(
                role="assistant", content="A pixel.", reasoning=[ReasoningBlock(text="It is tiny.")]
            ),
            Message(role="user", content="and now?", parts=[ContentPart(text="Look again.")]),
        ],
        reasoning=ReasoningConfig(budget_tokens=1024),
    )


def test_ollama_images_think_and_thinking_are_the_references_shapes() -> None:
    body = ollama.request_body(llava_request(), "llava", stream=False)
    assert body == load_json("ollama/content_request.json")
    off = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")], reasoning=ReasoningConfig(off=True)
    )
    assert ollama.request_body(off, "m", stream=False)["think"] is False


def test_ollama_thinking_is_read() -> None:
    response = ollama.response_from_ollama(load_json("ollama/chat_response_thinking.json"))
    (block,) = response.choices[0].message.reasoning
    assert block.text == "Count r's: s-t-r-a-w-b-e-r-r-y ..."
    assert response.choices[0].message.content == "There are 3."


async def test_ollama_thinking_streams_as_reasoning_before_the_text() -> None:
    http = RecordedHttp(load_bytes("ollama/chat_stream_thinking.ndjson"), piece=4096)
    provider = ollama.OllamaProvider(settings("ollama"), http)
    request = ChatCompletionRequest(messages=[Message(role="user", content="hi")])
    chunks = [c async for c in provider.stream(request, Deployment("o", "qwen3"))]
    pieces = [d.text for c in chunks for ch in c.choices for d in ch.delta.reasoning]
    assert "".join(pieces) == "Let me count"
    assert "".join(ch.delta.content for c in chunks for ch in c.choices) == "There are 3."


def test_ollama_refuses_redacted_reasoning_and_an_image_detail() -> None:
    provider = ollama.OllamaProvider(settings("ollama"), RecordedHttp(b""))
    request = llava_request()
    request.messages[2].reasoning.add(redacted_data="opaque")
    refusal = provider.refusal(request)
    assert refusal is not None and refusal.field == "messages[2].reasoning[1].redacted_data"


async def test_ollama_embed_is_the_references_shape() -> None:
    http = RecordedHttp(load_bytes("ollama/embed_response.json"))
    provider = ollama.OllamaProvider(settings("ollama"), http)
    response = await provider.embed(
        EmbedRequest(inputs=["a", "b"], dimensions=3), Deployment("o", "all-minilm")
    )
    ((url, body, _),) = http.sent
    assert url.endswith("/api/embed")
    assert body == {"model": "all-minilm", "input": ["a", "b"], "dimensions": 3}
    assert [len(e.values) for e in response.embeddings] == [3, 3]
    assert response.embeddings[1].values[1] == pytest.approx(0.02859368)
    assert response.usage.prompt_tokens == 8


@pytest.mark.parametrize(("detail", "refused"), [("", False), ("auto", False), ("high", True)])
def test_ollama_refuses_an_image_detail_other_than_auto(detail: str, refused: bool) -> None:
    provider = ollama.OllamaProvider(settings("ollama"), RecordedHttp(b""))
    request = llava_request()  # a text part too, after the image
    request.messages[1].parts[0].image.detail = detail
    refusal = provider.refusal(request)
    if refused:
        assert refusal is not None and refusal.field == "messages[1].parts[0].image.detail"
    else:
        assert refusal is None


@pytest.mark.parametrize(("fetch", "why"), REFUSED_FETCHES)
async def test_ollama_fetches_an_image_url_through_the_guarded_fetcher(
    fetch: MediaFetchSettings | None, why: str
) -> None:
    part = ContentPart(image=ImagePart(url="http://127.0.0.1/pixel.png"))
    deployment = Deployment("o", "llava")
    refused = await refused_before_sending(
        ollama.OllamaProvider, "ollama", deployment, part, fetch, why
    )
    assert refused.field == "messages[0].parts[0].image.url"


def test_anthropic_text_parts_are_text_blocks_after_the_content() -> None:
    request = ChatCompletionRequest(
        messages=[
            Message(
                role="user",
                content="Describe this ant.",
                parts=[ContentPart(image=ImagePart(url=ANT)), ContentPart(text="In one line.")],
            )
        ]
    )
    body = anthropic.request_body(request, "m", 1024, stream=False)
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe this ant."},
                {"type": "image", "source": {"type": "url", "url": ANT}},
                {"type": "text", "text": "In one line."},
            ],
        }
    ]


def test_anthropic_refuses_audio() -> None:
    # Only reachable past the router's capability check (Anthropic carries no audio input),
    # which the adapter does not rely on.
    part = ContentPart(audio=AudioPart(data=b"RIFF", format="wav"))
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="What is said?", parts=[part])]
    )
    refusal = anthropic.request_refusal(request)
    assert isinstance(refusal, InvalidRequest) and refusal.field == "messages[0].parts[0].audio"


#: A PDF's header with the binary comment line PDF writers add (not UTF-8).
BINARY_PDF = b"%PDF-1.7\n%\xb5\xb5\xb5\xb5\n"


def test_anthropic_refuses_a_text_document_that_is_not_utf8_but_takes_a_binary_pdf() -> None:
    latin1 = ContentPart(document=DocumentPart(data=b"caf\xe9", media_type="text/plain"))
    pdf = ContentPart(document=DocumentPart(data=BINARY_PDF, media_type="application/pdf"))
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="Summarize.", parts=[pdf, latin1])]
    )
    refusal = anthropic.request_refusal(request)
    assert isinstance(refusal, InvalidRequest)
    assert refusal.field == "messages[0].parts[1].document.data"
    del request.messages[0].parts[1]
    assert anthropic.request_refusal(request) is None
    body = anthropic.request_body(request, "m", 1024, stream=False)
    assert body["messages"][0]["content"][1] == {
        "type": "document",
        "source": {
            "type": "base64",
            "media_type": "application/pdf",
            "data": "JVBERi0xLjcKJbW1tbUK",
        },
    }


#: The PDF the pdf-support guide passes by URL.
PDF_URL = (
    "https://assets.anthropic.com/m/1cd9d098ac3e6467/original/"
    "Claude-3-Model-Card-October-Addendum.pdf"
)


async def test_anthropic_passes_image_and_pdf_urls_on_for_the_api_to_fetch() -> None:
    http = RecordedHttp(load_bytes("anthropic/tool_use_response.json"))
    no_fetching = MediaFetcher(MediaFetchSettings(enabled=False))  # a fetch would be refused
    provider = anthropic.AnthropicProvider(settings("anthropic"), http, no_fetching)
    parts = [
        ContentPart(image=ImagePart(url=ANT, media_type="image/jpeg")),
        ContentPart(document=DocumentPart(url=PDF_URL, media_type="application/pdf")),
    ]
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="Compare them.", parts=parts)]
    )
    await provider.complete(request, Deployment("a", "claude-sonnet-4-5"))
    ((_, body, _),) = http.sent
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare them."},
        {"type": "image", "source": {"type": "url", "url": ANT}},
        {"type": "document", "source": {"type": "url", "url": PDF_URL}},
    ]


@pytest.mark.parametrize(("fetch", "why"), REFUSED_FETCHES)
async def test_anthropic_fetches_a_text_document_url_through_the_guarded_fetcher(
    fetch: MediaFetchSettings | None, why: str
) -> None:
    # The API's URL source is for PDFs: a text/plain document goes as a text source.
    part = ContentPart(
        document=DocumentPart(url="http://127.0.0.1/notes.txt", media_type="text/plain")
    )
    deployment = Deployment("a", "claude-sonnet-4-5")
    refused = await refused_before_sending(
        anthropic.AnthropicProvider, "anthropic", deployment, part, fetch, why
    )
    assert refused.field == "messages[0].parts[0].document.url"

"""The OpenAI adapter's content: parts, developer role, reasoning, usage details and
embeddings, compared with the API reference's shapes (tests/fixtures/README.md)."""

from __future__ import annotations

import base64
import struct

import orjson
import pytest

from ai_service.config import MediaFetchSettings
from ai_service.errors import UpstreamUnavailable
from ai_service.providers.base import Deployment
from ai_service.providers.http.fetch import MediaFetcher
from ai_service.providers.openai import (
    OpenAIProvider,
    embed_body,
    embed_response_from_openai,
    request_body,
    response_from_openai,
)
from ai_service_protos.ai_service_pb2 import (
    AudioPart,
    ChatCompletionRequest,
    ContentPart,
    DocumentPart,
    EmbedRequest,
    ImagePart,
    Message,
    ReasoningConfig,
)
from tests.fixtures import (
    REFUSED_FETCHES,
    RecordedHttp,
    load_bytes,
    load_json,
    refused_before_sending,
    settings,
)

DEPLOYMENT = Deployment("openai-docs", "deepseek-reasoner")
PNG = base64.b64decode("iVBORw0KGgo=")
PDF = base64.b64decode("JVBERi0xLjQ=")
WAV = base64.b64decode("UklGRg==")
ANT = "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"


def content_request() -> ChatCompletionRequest:
    return ChatCompletionRequest(
        messages=[
            Message(role="developer", content="Answer in one sentence."),
            Message(
                role="user",
                content="What is in these files?",
                parts=[
                    ContentPart(image=ImagePart(data=PNG, media_type="image/png", detail="low")),
                    ContentPart(image=ImagePart(url=ANT)),
                    ContentPart(
                        document=DocumentPart(
                            data=PDF, media_type="application/pdf", name="draconomicon.pdf"
                        )
                    ),
                    ContentPart(audio=AudioPart(data=WAV, format="wav")),
                ],
            ),
        ],
        reasoning=ReasoningConfig(effort="low"),
    )


def test_parts_developer_role_and_effort_are_the_references_shapes() -> None:
    body = request_body(content_request(), "gpt-4o", "max_completion_tokens", stream=False)
    assert body == load_json("openai/content_request.json")


@pytest.mark.parametrize(
    ("setting", "effort"),
    [
        (ReasoningConfig(effort="high"), "high"),
        (ReasoningConfig(budget_tokens=1024), "low"),
        (ReasoningConfig(budget_tokens=8192), "medium"),
        (ReasoningConfig(budget_tokens=8193), "high"),
        (ReasoningConfig(off=True), "none"),
    ],
)
def test_reasoning_setting_is_an_effort(setting: ReasoningConfig, effort: str) -> None:
    request = ChatCompletionRequest(messages=[Message(role="user", content="hi")])
    request.reasoning.CopyFrom(setting)
    assert (
        request_body(request, "o4-mini", "max_completion_tokens", stream=False)["reasoning_effort"]
        == effort
    )


def test_usage_details_are_read() -> None:
    response = response_from_openai(load_json("openai/content_response.json"))
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1117, 46, 1163)
    assert (usage.cached_tokens, usage.cache_write_tokens, usage.reasoning_tokens) == (1024, 0, 32)
    assert not response.choices[0].message.reasoning  # OpenAI sends no reasoning text


async def test_reasoning_content_of_compatible_servers_streams_as_reasoning_deltas() -> None:
    http = RecordedHttp(load_bytes("openai/stream_reasoning_content.sse"), piece=4096)
    provider = OpenAIProvider(settings("openai"), http)
    request = ChatCompletionRequest(messages=[Message(role="user", content="hi")])
    chunks = [c async for c in provider.stream(request, DEPLOYMENT)]
    thoughts = [d for c in chunks for ch in c.choices for d in ch.delta.reasoning]
    assert "".join(d.text for d in thoughts) == "Okay, the user says hi."
    assert {d.index for d in thoughts} == {0}
    assert "".join(ch.delta.content for c in chunks for ch in c.choices) == "Hello!"
    assert chunks[-1].usage.reasoning_tokens == 9


async def test_include_text_false_hides_the_reasoning_text() -> None:
    http = RecordedHttp(load_bytes("openai/stream_reasoning_content.sse"), piece=4096)
    provider = OpenAIProvider(settings("openai"), http)
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")],
        reasoning=ReasoningConfig(effort="low", include_text=False),
    )
    chunks = [c async for c in provider.stream(request, DEPLOYMENT)]
    assert not [d for c in chunks for ch in c.choices for d in ch.delta.reasoning]
    assert chunks[-1].usage.reasoning_tokens == 9  # the count stays


def test_embeddings_request_asks_for_base64_when_the_caller_wants_bytes() -> None:
    request = EmbedRequest(inputs=["a", "b"], dimensions=8, encoding_format="base64", user="u")
    assert embed_body(request, "text-embedding-3-small") == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "base64",
        "dimensions": 8,
        "user": "u",
    }
    assert embed_body(EmbedRequest(inputs=["a"]), "m")["encoding_format"] == "float"


def test_embeddings_response_as_floats_and_as_bytes() -> None:
    payload = load_json("openai/embeddings_response.json")
    floats = embed_response_from_openai(payload, EmbedRequest(inputs=["x"]), "p")
    (one,) = floats.embeddings
    assert one.values == pytest.approx([0.0023064255, -0.009327292, -0.0028842222])
    assert (floats.usage.prompt_tokens, floats.usage.total_tokens) == (8, 8)
    packed = embed_response_from_openai(
        payload, EmbedRequest(inputs=["x"], encoding_format="base64"), "p"
    )
    assert struct.unpack("<3f", packed.embeddings[0].data) == pytest.approx(one.values)


def test_a_base64_embedding_passes_through_byte_for_byte() -> None:
    raw = struct.pack("<2f", 0.5, -0.25)
    payload = {
        "data": [{"index": 0, "embedding": base64.b64encode(raw).decode()}],
        "model": "m",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    response = embed_response_from_openai(
        payload, EmbedRequest(inputs=["x"], encoding_format="base64"), "p"
    )
    assert response.embeddings[0].data == raw


def test_an_embeddings_answer_short_of_an_input_fails_whole() -> None:
    payload = load_json("openai/embeddings_response.json")
    with pytest.raises(UpstreamUnavailable, match="1 embeddings for 2 inputs"):
        embed_response_from_openai(payload, EmbedRequest(inputs=["x", "y"]), "p")


def test_text_parts_go_out_as_text_parts() -> None:
    message = Message(
        role="user",
        parts=[ContentPart(text="What is in this image?"), ContentPart(image=ImagePart(url=ANT))],
    )
    body = request_body(
        ChatCompletionRequest(messages=[message]), "gpt-4o", "max_completion_tokens", stream=False
    )
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": ANT}},
    ]


@pytest.mark.parametrize(
    ("media_type", "data", "filename"),
    [("application/pdf", PDF, "document.pdf"), ("text/plain", b"Hello.", "document.txt")],
)
def test_a_document_without_a_name_gets_a_filename_of_its_type(
    media_type: str, data: bytes, filename: str
) -> None:
    # The reference's `file` part names its file; the caller may not have.
    part = ContentPart(document=DocumentPart(data=data, media_type=media_type))
    message = Message(role="user", content="Summarise this.", parts=[part])
    body = request_body(
        ChatCompletionRequest(messages=[message]), "gpt-4o", "max_completion_tokens", stream=False
    )
    assert body["messages"][0]["content"][1]["file"]["filename"] == filename


@pytest.mark.parametrize(("fetch", "why"), REFUSED_FETCHES)
async def test_a_document_url_is_fetched_through_the_guarded_fetcher(
    fetch: MediaFetchSettings | None, why: str
) -> None:
    # `file_data` takes only data: the gateway fetches a document given by URL.
    part = ContentPart(document=DocumentPart(url="http://127.0.0.1/draconomicon.pdf"))
    refused = await refused_before_sending(OpenAIProvider, "openai", DEPLOYMENT, part, fetch, why)
    assert refused.field == "messages[0].parts[0].document.url"


async def test_an_image_url_goes_to_the_api_unfetched() -> None:
    # The API takes images by URL: with fetching off, a fetch would be refused.
    http = RecordedHttp(load_bytes("openai/content_response.json"))
    media = MediaFetcher(MediaFetchSettings(enabled=False))
    provider = OpenAIProvider(settings("openai"), http, media)
    part = ContentPart(image=ImagePart(url=ANT))
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="What is in this image?", parts=[part])]
    )
    await provider.complete(request, DEPLOYMENT)
    ((_, body, _),) = http.sent
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": ANT}},
    ]


@pytest.mark.parametrize(("include_text", "kept"), [(None, True), (True, True), (False, False)])
async def test_a_completions_reasoning_text_is_kept_unless_the_caller_declines_it(
    include_text: bool | None, kept: bool
) -> None:
    # DeepSeek and vLLM answer with `reasoning_content` beside `content`.
    payload = load_json("openai/content_response.json")
    payload["choices"][0]["message"]["reasoning_content"] = "Okay, the user says hi."
    provider = OpenAIProvider(settings("openai"), RecordedHttp(orjson.dumps(payload)))
    request = ChatCompletionRequest(messages=[Message(role="user", content="hi")])
    if include_text is not None:
        request.reasoning.include_text = include_text
    response = await provider.complete(request, DEPLOYMENT)
    texts = [block.text for block in response.choices[0].message.reasoning]
    assert texts == (["Okay, the user says hi."] if kept else [])
    assert response.choices[0].message.content == "The image shows an ant on a leaf."


def test_an_embeddings_answer_names_the_model_that_made_it() -> None:
    payload = load_json("openai/embeddings_response.json")
    response = embed_response_from_openai(payload, EmbedRequest(inputs=["x"]), "p")
    assert response.model == "text-embedding-3-small"


@pytest.mark.parametrize(
    ("usage", "counts"),
    [(None, (0, 0)), ({"prompt_tokens": 8}, (8, 8))],
)
def test_an_embeddings_answer_counts_what_usage_it_brings(
    usage: dict[str, int] | None, counts: tuple[int, int]
) -> None:
    # Compatible servers send less than OpenAI: no usage, or no total.
    payload = load_json("openai/embeddings_response.json")
    del payload["usage"]
    if usage is not None:
        payload["usage"] = usage
    response = embed_response_from_openai(payload, EmbedRequest(inputs=["x"]), "p")
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == counts

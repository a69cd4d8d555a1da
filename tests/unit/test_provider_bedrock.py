"""The Bedrock adapter on the Converse API's documented examples (tests/fixtures/README.md):
the request, the answer, the event stream framed as AWS frames it (CRC-checked by
botocore's parser), exceptions mid-stream, errors, and requests signed as SigV4 wants."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ai_service.errors import (
    InvalidRequest,
    UpstreamAuth,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ai_service.providers.base import Deployment
from ai_service.providers.bedrock import (
    BedrockProvider,
    error_from_response,
    request_body,
    response_from_bedrock,
)
from ai_service.providers.credentials import OutgoingRequest
from ai_service.providers.credentials.aws import SigV4
from ai_service.simulator.eventstream import event_frame, exception_frame
from ai_service.simulator.sigv4 import SigningKey, verify
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    FunctionDefinition,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from tests.fixtures import RecordedHttp, load_json, settings

MODEL = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
DEPLOYMENT = Deployment("bedrock-docs", MODEL)
KEYS = {
    "region": "us-east-1",
    "access_key_id": "AKIDEXAMPLE",
    "secret_access_key": "secret-example",
}
TOP_SONG = Tool(
    type="function",
    function=FunctionDefinition(
        name="top_song",
        description="Get the most popular song played on a radio station.",
        parameters_json=orjson.dumps(
            {"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]}
        ).decode(),
    ),
)


def bedrock(**http: Any) -> BedrockProvider:
    return BedrockProvider(settings("bedrock", bedrock=KEYS), RecordedHttp(**http))


def test_request_carries_system_turns_tool_config_and_inference_config() -> None:
    call = ToolCall(id="tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", type="function")
    call.function.name = "top_song"
    call.function.arguments = '{"sign": "WZPZ"}'
    request = ChatCompletionRequest(
        messages=[
            Message(role="system", content="You are a radio assistant."),
            Message(role="user", content="What is the most popular song on WZPZ?"),
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id=call.id, content="Elemental Hotel"),
            Message(role="user", content="And its artist?"),
        ],
        tools=[TOP_SONG],
        tool_choice=ToolChoice(mode="required"),
        max_tokens=512,
        temperature=0.5,
        top_p=0.9,
        stop=["END"],
        seed=3,
    )
    body = request_body(request)
    assert body["system"] == [{"text": "You are a radio assistant."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "What is the most popular song on WZPZ?"}]},
        {
            "role": "assistant",
            "content": [
                {"toolUse": {"toolUseId": call.id, "name": "top_song", "input": {"sign": "WZPZ"}}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": call.id, "content": [{"text": "Elemental Hotel"}]}},
                {"text": "And its artist?"},
            ],
        },
    ]
    assert body["inferenceConfig"] == {
        "maxTokens": 512,
        "temperature": 0.5,
        "topP": pytest.approx(0.9),
        "stopSequences": ["END"],
    }
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "top_song",
                    "description": "Get the most popular song played on a radio station.",
                    "inputSchema": {
                        "json": {
                            "type": "object",
                            "properties": {"sign": {"type": "string"}},
                            "required": ["sign"],
                        }
                    },
                }
            }
        ],
        "toolChoice": {"any": {}},
    }
    assert "seed" not in orjson.dumps(body).decode()  # Converse has no field for it


def test_tool_choice_none_sends_no_tools_unless_the_conversation_holds_tool_calls() -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")],
        tools=[TOP_SONG],
        tool_choice=ToolChoice(mode="none"),
    )
    assert "toolConfig" not in request_body(request)
    call = ToolCall(id="t1", type="function")
    call.function.name, call.function.arguments = "top_song", "{}"
    request.messages.extend(
        [
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id="t1", content="x"),
        ]
    )
    assert "toolChoice" not in request_body(request)["toolConfig"]  # required, and cannot say none


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            ChatCompletionRequest(messages=[Message(role="user", content="x")], temperature=1.5),
            "temperature",
        ),
        (
            ChatCompletionRequest(
                messages=[Message(role="user", content="x")],
                response_format=ResponseFormat(type="json_object"),
            ),
            "response_format.type",
        ),
        (
            ChatCompletionRequest(
                messages=[
                    Message(role="system", content="s"),
                    Message(role="assistant", content="x"),
                ]
            ),
            "messages",
        ),
    ],
)
def test_what_converse_cannot_take_is_refused_naming_the_field(
    request_: ChatCompletionRequest, field: str
) -> None:
    refusal = bedrock(body=b"").refusal(request_)
    assert isinstance(refusal, InvalidRequest) and refusal.field == field


# --- answers -------------------------------------------------------------------------------


def test_the_documented_tool_use_answer() -> None:
    response = response_from_bedrock(load_json("bedrock/converse_tool_use_response.json"), MODEL)
    choice = response.choices[0]
    (call,) = choice.message.tool_calls
    assert (call.id, call.function.name) == ("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "top_song")
    assert orjson.loads(call.function.arguments) == {"sign": "WZPZ"}
    assert choice.finish_reason == "tool_calls"
    assert (
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
        response.usage.total_tokens,
    ) == (375, 53, 428)


def test_prompt_cache_reads_count_as_prompt_tokens() -> None:
    response = response_from_bedrock(load_json("bedrock/converse_text_response.json"), MODEL)
    assert response.choices[0].message.content.startswith("The most popular song")
    assert (
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
        response.usage.total_tokens,
    ) == (
        22 + 1024,
        17,
        1063,
    )


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    payload = load_json("bedrock/converse_text_response.json")
    payload["stopReason"] = reason
    assert response_from_bedrock(payload, MODEL).choices[0].finish_reason == finish


def test_a_malformed_tool_use_is_the_models_failure() -> None:
    payload = load_json("bedrock/converse_tool_use_response.json")
    payload["stopReason"] = "malformed_tool_use"
    with pytest.raises(UpstreamUnavailable, match="malformed_tool_use"):
        response_from_bedrock(payload, MODEL)


def documented_stream() -> bytes:
    return b"".join(
        event_frame(kind, payload)
        for kind, payload in load_json("bedrock/converse_stream_tool_use.json")
    )


async def stream_of(body: bytes, piece: int = 5) -> list[Any]:
    provider = bedrock(body=body, piece=piece)
    request = ChatCompletionRequest(messages=[Message(role="user", content="x")])
    return [c async for c in provider.stream(request, DEPLOYMENT)]


async def test_the_documented_stream_assembles_text_and_a_tool_call_from_partial_json() -> None:
    chunks = await stream_of(documented_stream())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (
        "".join(c.choices[0].delta.content for c in chunks) == "I'll look up the most popular song."
    )
    pieces = [d for c in chunks for d in c.choices[0].delta.tool_calls]
    assert (pieces[0].id, pieces[0].function.name) == ("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "top_song")
    assert orjson.loads("".join(p.function.arguments for p in pieces)) == {"sign": "WZPZ"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (375, 53)


async def test_a_frame_whose_crc_does_not_match_fails_the_stream() -> None:
    body = bytearray(documented_stream())
    body[40] ^= 0x01  # inside the first frame
    with pytest.raises(UpstreamUnavailable, match="corrupt event-stream frame"):
        await stream_of(bytes(body))


async def test_a_body_ending_inside_a_frame_fails_the_stream() -> None:
    body = documented_stream()
    with pytest.raises(UpstreamUnavailable):
        await stream_of(body[: len(body) - 10])


@pytest.mark.parametrize(
    ("exception", "error"),
    [
        ("throttlingException", UpstreamRateLimited),
        ("modelStreamErrorException", UpstreamUnavailable),
        ("internalServerException", UpstreamUnavailable),
        ("serviceUnavailableException", UpstreamUnavailable),
        ("validationException", UpstreamInvalidRequest),
        ("modelTimeoutException", UpstreamTimeout),
    ],
)
async def test_an_exception_mid_stream_maps_as_its_status_would(
    exception: str, error: type[Exception]
) -> None:
    frames = load_json("bedrock/converse_stream_tool_use.json")[:2]
    body = b"".join(event_frame(k, p) for k, p in frames) + exception_frame(
        exception, {"message": "it broke"}
    )
    with pytest.raises(error, match="it broke"):
        await stream_of(body)


# --- errors and signatures -----------------------------------------------------------------


class _Response:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self._headers = {k.lower(): v for k, v in headers.items()}

    def header(self, name: str) -> str | None:
        return self._headers.get(name.lower())


@pytest.mark.parametrize(
    ("status", "name", "error"),
    [
        (400, "ValidationException", UpstreamInvalidRequest),
        (403, "AccessDeniedException", UpstreamAuth),
        (403, "UnrecognizedClientException", UpstreamAuth),
        (429, "ThrottlingException", UpstreamRateLimited),
        (400, "ServiceQuotaExceededException", UpstreamRateLimited),
        (424, "ModelErrorException", UpstreamUnavailable),
        (503, "ServiceUnavailableException", UpstreamUnavailable),
    ],
)
def test_errors_are_mapped_by_the_exception_bedrock_names(
    status: int, name: str, error: type[Exception]
) -> None:
    response = _Response(
        status,
        {
            "x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": "r-1",
        },
    )
    mapped = error_from_response(response, b'{"Message": "said so"}', "b")  # type: ignore[arg-type]
    assert isinstance(mapped, error)
    assert mapped.metadata["upstream_request_id"] == "r-1"


async def test_a_signed_request_verifies_against_the_secret_and_not_another() -> None:
    signer = SigV4(settings("bedrock", bedrock=KEYS))
    host = "bedrock-runtime.us-east-1.amazonaws.com"
    url = f"https://{host}/model/{MODEL.replace(':', '%3A')}/converse"
    body = b'{"messages": []}'
    headers = {"content-type": "application/json", "user-agent": "ai-service"}
    signed = await signer.authorize(OutgoingRequest(url, body, headers))
    sent = {**headers, **signed, "host": host}
    path = url.split("amazonaws.com", 1)[1]

    def check(secret: str, what: bytes = body) -> Any:
        return verify(
            "POST",
            path,
            _Headers(sent),
            what,
            service="bedrock",
            key_for=lambda _: SigningKey(secret),
        )

    assert check("secret-example") is None
    assert check("another-secret").code == "InvalidSignatureException"
    assert check("secret-example", body + b" ").code == "InvalidSignatureException"
    assert signed["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")


class _Headers(dict[str, str]):
    """Header names looked up in any case, as an HTTP server does."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in headers.items()})

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


# --- content -------------------------------------------------------------------------------


def test_media_reasoning_and_cache_points_as_converse_blocks() -> None:
    from ai_service_protos.ai_service_pb2 import (
        CacheControl,
        ContentPart,
        DocumentPart,
        ImagePart,
        ReasoningBlock,
        ReasoningConfig,
    )

    earlier = Message(role="assistant", content="It is a pixel.")
    earlier.reasoning.extend(
        [ReasoningBlock(text="Looking.", signature="c2ln"), ReasoningBlock(redacted_data="cmVk")]
    )
    request = ChatCompletionRequest(
        messages=[
            Message(role="system", content="Be brief.", cache_control=CacheControl(ttl="1h")),
            Message(
                role="user",
                content="What is this?",
                parts=[
                    ContentPart(image=ImagePart(data=b"\x89PNG", media_type="image/png")),
                    ContentPart(
                        document=DocumentPart(
                            data=b"%PDF", media_type="application/pdf", name="my notes.pdf"
                        ),
                        cache_control=CacheControl(),
                    ),
                    ContentPart(document=DocumentPart(data=b"plain", media_type="text/plain")),
                ],
            ),
            earlier,
            Message(role="user", content="And now?"),
        ],
        tools=[Tool(type="function", function=TOP_SONG.function, cache_control=CacheControl())],
        reasoning=ReasoningConfig(effort="low"),
    )
    body = request_body(request, MODEL, default_max_tokens=1000)
    assert body["system"] == [
        {"text": "Be brief."},
        {"cachePoint": {"type": "default", "ttl": "1h"}},
    ]
    assert body["messages"][0]["content"] == [
        {"text": "What is this?"},
        {"image": {"format": "png", "source": {"bytes": "iVBORw=="}}},
        {"document": {"format": "pdf", "name": "my notes-pdf", "source": {"bytes": "JVBERg=="}}},
        {"cachePoint": {"type": "default"}},
        {"document": {"format": "txt", "name": "document-1", "source": {"bytes": "cGxhaW4="}}},
    ]
    assert body["messages"][1]["content"] == [
        {"reasoningContent": {"reasoningText": {"text": "Looking.", "signature": "c2ln"}}},
        {"reasoningContent": {"redactedContent": "cmVk"}},
        {"text": "It is a pixel."},
    ]
    assert body["toolConfig"]["tools"][1] == {"cachePoint": {"type": "default"}}
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 1024}
    }
    assert body["inferenceConfig"] == {"maxTokens": 1000 + 1024}  # the budget beside the answer's


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (
            Message(
                role="user", content="x", parts=[{"audio": {"data": b"RIFF", "format": "wav"}}]
            ),
            "messages[0].parts[0].audio",
        ),
        (
            Message(
                role="user",
                content="x",
                parts=[{"image": {"data": b"x", "media_type": "image/png", "detail": "low"}}],
            ),
            "messages[0].parts[0].image.detail",
        ),
    ],
)
def test_what_converse_has_no_field_for_in_content_is_refused(message: Message, field: str) -> None:
    refusal = bedrock(body=b"").refusal(ChatCompletionRequest(messages=[message]))
    assert refusal is not None and refusal.field == field


def test_reasoning_goes_only_to_claude_models() -> None:
    from ai_service_protos.ai_service_pb2 import ReasoningConfig

    request = ChatCompletionRequest(
        messages=[Message(role="user", content="x")], reasoning=ReasoningConfig(effort="low")
    )
    with pytest.raises(InvalidRequest) as refused:
        request_body(request, "amazon.nova-pro-v1:0")
    assert refused.value.field == "reasoning"


def test_reasoning_and_cache_counts_in_the_answer() -> None:
    payload = load_json("bedrock/converse_text_response.json")
    payload["output"]["message"]["content"].insert(
        0, {"reasoningContent": {"reasoningText": {"text": "Hmm.", "signature": "c2ln"}}}
    )
    response = response_from_bedrock(payload, MODEL)
    (block,) = response.choices[0].message.reasoning
    assert (block.text, block.signature) == ("Hmm.", "c2ln")
    assert (response.usage.cached_tokens, response.usage.cache_write_tokens) == (1024, 0)


async def test_streamed_reasoning_deltas_make_one_block_with_its_signature() -> None:
    frames = [
        ("messageStart", {"role": "assistant"}),
        (
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Hm"}}},
        ),
        (
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "m."}}},
        ),
        (
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "c2ln"}}},
        ),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Yes."}}),
        ("contentBlockStop", {"contentBlockIndex": 1}),
        ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": {"inputTokens": 2, "outputTokens": 3, "totalTokens": 5}}),
    ]
    chunks = await stream_of(b"".join(event_frame(k, p) for k, p in frames))
    pieces = [r for c in chunks for r in c.choices[0].delta.reasoning]
    assert {p.index for p in pieces} == {0}
    assert (
        "".join(p.text for p in pieces) == "Hmm." and "".join(p.signature for p in pieces) == "c2ln"
    )
    assert "".join(c.choices[0].delta.content for c in chunks) == "Yes."


def test_embedding_bodies_by_family_and_unknown_families_refused() -> None:
    from ai_service.providers.bedrock import cohere_body, embedding_family, titan_body
    from ai_service_protos.ai_service_pb2 import EmbedRequest

    request = EmbedRequest(inputs=["a"], dimensions=256)
    assert embedding_family("amazon.titan-embed-text-v2:0", request) == "titan"
    assert titan_body(request, "a") == {"inputText": "a", "dimensions": 256}
    assert cohere_body(["a", "b"]) == {
        "texts": ["a", "b"],
        "input_type": "search_document",
        "embedding_types": ["float"],
    }
    with pytest.raises(InvalidRequest) as refused:
        embedding_family("meta.llama3-8b-instruct-v1:0", EmbedRequest(inputs=["a"]))
    assert refused.value.field == "model"

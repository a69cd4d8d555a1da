"""The Gemini adapter on the Gemini API's documented examples (tests/fixtures/README.md),
and its reduction of JSON Schema to the subset Gemini accepts."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ai_service.errors import (
    InvalidRequest,
    UpstreamAuth,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from ai_service.providers.base import Deployment
from ai_service.providers.gemini import (
    GeminiProvider,
    error_from_response,
    request_body,
    response_from_gemini,
)
from ai_service.providers.gemini_schema import gemini_schema
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    FunctionDefinition,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from tests.fixtures import RecordedHttp, load_bytes, load_json, settings

DEPLOYMENT = Deployment("gemini-docs", "gemini-2.0-flash")


def tool(name: str, schema: dict[str, Any]) -> Tool:
    function = FunctionDefinition(name=name, parameters_json=orjson.dumps(schema).decode())
    return Tool(type="function", function=function)


def test_request_carries_system_turns_tools_choice_and_generation_config() -> None:
    call = ToolCall(id="call_1", type="function")
    call.function.name = "set_light_values"
    call.function.arguments = '{"brightness": 25}'
    request = ChatCompletionRequest(
        messages=[
            Message(role="system", content="You are a lighting system."),
            Message(role="user", content="Dim the lights."),
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id="call_1", content='{"brightness": 25}'),
            Message(role="tool", tool_call_id="call_1", content="done"),
            Message(role="user", content="Thanks"),
        ],
        tools=[
            tool(
                "set_light_values",
                {"type": "object", "properties": {"brightness": {"type": "integer"}}},
            )
        ],
        tool_choice=ToolChoice(function="set_light_values"),
        temperature=0.2,
        top_p=0.9,
        max_tokens=64,
        seed=7,
        stop=["END"],
        user="u-1",
    )
    body = request_body(request)
    assert body["systemInstruction"] == {"parts": [{"text": "You are a lighting system."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Dim the lights."}]},
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "set_light_values", "args": {"brightness": 25}}}],
        },
        {
            "role": "user",
            "parts": [
                # A JSON object is the response; other text is wrapped as its result.
                {"functionResponse": {"name": "set_light_values", "response": {"brightness": 25}}},
                {"functionResponse": {"name": "set_light_values", "response": {"result": "done"}}},
                {"text": "Thanks"},
            ],
        },
    ]
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "set_light_values",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"brightness": {"type": "INTEGER"}},
                    },
                }
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["set_light_values"]}
    }
    assert body["generationConfig"] == {
        "temperature": pytest.approx(0.2),
        "topP": pytest.approx(0.9),
        "seed": 7,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
    }
    assert "u-1" not in orjson.dumps(body).decode()  # Gemini has no end-user field


def test_json_response_formats_ask_for_json_with_the_reduced_schema() -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")],
        response_format=ResponseFormat(
            type="json_schema",
            json_schema=orjson.dumps(
                {
                    "type": "object",
                    "properties": {"a": {"type": ["string", "null"]}},
                    "additionalProperties": False,
                }
            ).decode(),
        ),
    )
    assert request_body(request)["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {"a": {"type": "STRING", "nullable": True}},
        },
    }


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            ChatCompletionRequest(
                messages=[Message(role="user", content="x")], stop=list("abcdef")
            ),
            "stop",
        ),
        (
            ChatCompletionRequest(
                messages=[
                    Message(role="user", content="x"),
                    Message(role="tool", tool_call_id="nope", content="y"),
                ]
            ),
            "messages[1].tool_call_id",
        ),
        (
            ChatCompletionRequest(
                messages=[Message(role="user", content="x")],
                tools=[
                    tool("f", {"type": "object", "properties": {"a": {"not": {"type": "string"}}}})
                ],
            ),
            "tools[0].function.parameters.properties.a.not",
        ),
    ],
)
def test_what_gemini_cannot_take_is_refused_naming_the_field(
    request_: ChatCompletionRequest, field: str
) -> None:
    refusal = GeminiProvider(settings("gemini")).refusal(request_)
    assert isinstance(refusal, InvalidRequest)
    assert refusal.field == field


# --- the schema subset ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "reduced"),
    [
        # $ref inlined; a description beside it kept.
        (
            {
                "type": "object",
                "properties": {"when": {"$ref": "#/$defs/Day", "description": "the day"}},
                "$defs": {"Day": {"type": "string", "enum": ["mon", "tue"]}},
            },
            {
                "type": "OBJECT",
                "properties": {
                    "when": {"type": "STRING", "enum": ["mon", "tue"], "description": "the day"}
                },
            },
        ),
        # anyOf with null → nullable; oneOf → anyOf; several types → anyOf.
        (
            {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            {"type": "INTEGER", "nullable": True},
        ),
        (
            {"oneOf": [{"type": "string"}, {"type": "number"}]},
            {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]},
        ),
        ({"type": ["string", "integer"]}, {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}),
        # const → enum; examples → example; exclusive bounds → bounds; a single allOf merged.
        ({"const": "on"}, {"enum": ["on"]}),
        ({"type": "string", "examples": ["a", "b"]}, {"type": "STRING", "example": "a"}),
        ({"type": "number", "exclusiveMinimum": 0}, {"type": "NUMBER", "minimum": 0}),
        ({"allOf": [{"type": "string", "minLength": 2}]}, {"type": "STRING", "minLength": 2}),
        # Dropped: annotations, additionalProperties false, formats Gemini has no name for.
        (
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "title": "T",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "mail": {"type": "string", "format": "email"},
                    "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                },
                "required": ["at"],
            },
            {
                "title": "T",
                "type": "OBJECT",
                "properties": {
                    "at": {"type": "STRING", "format": "date-time"},
                    "mail": {"type": "STRING"},
                    "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
                },
                "required": ["at"],
            },
        ),
    ],
)
def test_json_schema_is_reduced_to_what_gemini_takes(
    schema: dict[str, Any], reduced: dict[str, Any]
) -> None:
    assert gemini_schema(schema, "p") == reduced


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"not": {"type": "string"}}, "p.not"),
        ({"type": "object", "patternProperties": {"^x": {}}}, "p.patternProperties"),
        ({"type": "object", "additionalProperties": {"type": "integer"}}, "p.additionalProperties"),
        ({"type": "array", "items": [{"type": "string"}]}, "p.items"),
        ({"type": "array"}, "p.items"),
        ({"enum": [1, 2]}, "p.enum"),
        ({"allOf": [{"type": "string"}, {"minLength": 1}]}, "p.allOf"),
        ({"if": {"type": "string"}, "then": {"minLength": 1}}, "p.if"),
        (
            {
                "$defs": {
                    "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}
                },
                "$ref": "#/$defs/Node",
            },
            "p.properties.next.$ref",
        ),
        ({"$ref": "https://example.com/schema"}, "p.$ref"),
    ],
)
def test_what_the_subset_cannot_express_is_refused_naming_the_keyword(
    schema: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        gemini_schema(schema, "p")
    assert refused.value.field == field


# --- answers -------------------------------------------------------------------------------


def test_a_documented_function_call_gets_an_id_and_ends_tool_calls() -> None:
    response = response_from_gemini(load_json("gemini/function_call_response.json"), "m")
    choice = response.choices[0]
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and len(call.id) == 29
    assert call.function.name == "set_light_values"
    assert orjson.loads(call.function.arguments) == {"brightness": 25, "color_temp": "warm"}
    assert choice.finish_reason == "tool_calls"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (54, 9)
    assert response.model == "gemini-2.0-flash"


def test_thoughts_are_left_out_of_the_text_and_counted_as_completion_tokens() -> None:
    response = response_from_gemini(load_json("gemini/thinking_response.json"), "m")
    assert response.choices[0].message.content == "The smallest prime above 100 is 101."
    assert response.id == "Nq2kaPnGKZ3X1PIPx4WSgQ4"
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 11 + 64, 87)


def test_a_blocked_prompt_is_an_empty_answer_ending_content_filter() -> None:
    response = response_from_gemini(load_json("gemini/blocked_prompt_response.json"), "m")
    choice = response.choices[0]
    assert (choice.message.content, choice.finish_reason) == ("", "content_filter")


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    payload = load_json("gemini/thinking_response.json")
    payload["candidates"][0]["finishReason"] = reason
    assert response_from_gemini(payload, "m").choices[0].finish_reason == finish


def test_a_malformed_function_call_is_the_models_failure() -> None:
    payload = load_json("gemini/function_call_response.json")
    payload["candidates"][0]["finishReason"] = "MALFORMED_FUNCTION_CALL"
    with pytest.raises(UpstreamUnavailable, match="MALFORMED_FUNCTION_CALL"):
        response_from_gemini(payload, "m")


async def test_the_documented_stream_ends_with_finish_and_usage_after_the_body() -> None:
    provider = GeminiProvider(
        settings("gemini"), RecordedHttp(load_bytes("gemini/stream_text.sse"), piece=9)
    )
    chunks = [
        c
        async for c in provider.stream(
            ChatCompletionRequest(messages=[Message(role="user", content="x")]), DEPLOYMENT
        )
    ]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (
        "".join(c.choices[0].delta.content for c in chunks)
        == "The quick brown fox jumps over the lazy dog."
    )
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 10)
    url = provider._endpoint._http.sent[-1][0]  # type: ignore[attr-defined]
    assert (
        url
        == "http://upstream.invalid/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    )


async def test_a_stream_without_a_finish_reason_was_cut_short() -> None:
    body = load_bytes("gemini/stream_text.sse").rsplit(b"data: ", 1)[0]
    provider = GeminiProvider(settings("gemini"), RecordedHttp(body))
    with pytest.raises(UpstreamUnavailable, match="without a finishReason"):
        [
            c
            async for c in provider.stream(
                ChatCompletionRequest(messages=[Message(role="user", content="x")]), DEPLOYMENT
            )
        ]


# --- errors --------------------------------------------------------------------------------


class _Response:
    def __init__(self, status: int) -> None:
        self.status = status

    def header(self, name: str) -> str | None:
        return None


def test_a_429s_wait_comes_from_its_retry_info() -> None:
    error = error_from_response(_Response(429), load_bytes("gemini/error_rate_limited.json"), "g")  # type: ignore[arg-type]
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after == 23.0
    assert "You exceeded your current quota" in error.message


def test_a_refused_key_is_the_gateways_credential_though_gemini_says_400() -> None:
    error = error_from_response(
        _Response(400), load_bytes("gemini/error_api_key_invalid.json"), "g"
    )  # type: ignore[arg-type]
    assert isinstance(error, UpstreamAuth)
    plain = error_from_response(_Response(400), b'{"error": {"code": 400, "message": "bad"}}', "g")  # type: ignore[arg-type]
    assert isinstance(plain, UpstreamInvalidRequest)


# --- content -------------------------------------------------------------------------------


def test_media_go_inline_with_their_type_and_system_parts_become_the_instruction() -> None:
    from ai_service_protos.ai_service_pb2 import AudioPart, ContentPart, DocumentPart, ImagePart

    request = ChatCompletionRequest(
        messages=[
            Message(role="developer", content="Be brief."),
            Message(
                role="user",
                content="Compare",
                parts=[
                    ContentPart(image=ImagePart(data=b"\x89PNG", media_type="image/png")),
                    ContentPart(document=DocumentPart(data=b"%PDF", media_type="application/pdf")),
                    ContentPart(audio=AudioPart(data=b"RIFF", format="wav")),
                    ContentPart(text="closely"),
                ],
            ),
        ]
    )
    body = request_body(request)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"][0]["parts"] == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERg=="}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"text": "closely"},
    ]


@pytest.mark.parametrize(
    ("reasoning", "config"),
    [
        ({"effort": "low"}, {"thinkingBudget": 1024, "includeThoughts": True}),
        ({"budget_tokens": 3000}, {"thinkingBudget": 3000, "includeThoughts": True}),
        ({"off": True}, {"thinkingBudget": 0}),
        (
            {"effort": "high", "include_text": False},
            {"thinkingBudget": 16384, "includeThoughts": False},
        ),
    ],
)
def test_the_reasoning_setting_is_thinking_config(
    reasoning: dict[str, Any], config: dict[str, Any]
) -> None:
    from ai_service_protos.ai_service_pb2 import ReasoningConfig

    request = ChatCompletionRequest(
        messages=[Message(role="user", content="hi")], reasoning=ReasoningConfig(**reasoning)
    )
    assert request_body(request)["generationConfig"]["thinkingConfig"] == config


def test_thoughts_and_signatures_go_back_where_gemini_checks_them() -> None:
    # The documented answer: a thought summary, and a signature on the answer part.
    answer = response_from_gemini(load_json("gemini/thinking_response.json"), "m")
    message = answer.choices[0].message
    assert [(b.text[:12], b.signature) for b in message.reasoning] == [
        ("**Weighing t", ""),
        ("", "CiEBjz1rX0qZ5m4Q"),
    ]
    call = message.tool_calls.add(id="call_1", type="function")
    call.function.name, call.function.arguments = "lookup", '{"n": 101}'
    request = ChatCompletionRequest(
        messages=[
            Message(role="user", content="prime?"),
            message,
            Message(role="tool", tool_call_id="call_1", content="prime"),
        ]
    )
    model_turn = request_body(request)["contents"][1]
    assert model_turn["parts"] == [
        {"text": message.reasoning[0].text, "thought": True},
        {"text": "The smallest prime above 100 is 101."},
        # A loose signature goes on the first function call (Gemini 3 requires it there).
        {
            "functionCall": {"name": "lookup", "args": {"n": 101}},
            "thoughtSignature": "CiEBjz1rX0qZ5m4Q",
        },
    ]


async def test_streamed_thoughts_make_one_signed_block_before_the_text() -> None:
    events = [
        {
            "candidates": [
                {"content": {"parts": [{"text": "Think", "thought": True}], "role": "model"}}
            ]
        },
        {
            "candidates": [
                {
                    "content": {
                        "parts": [{"text": "ing.", "thought": True, "thoughtSignature": "c2ln"}],
                        "role": "model",
                    }
                }
            ]
        },
        {
            "candidates": [
                {
                    "content": {"parts": [{"text": "Answer."}], "role": "model"},
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 3,
                "candidatesTokenCount": 1,
                "thoughtsTokenCount": 2,
                "totalTokenCount": 6,
            },
        },
    ]
    body = b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events)
    provider = GeminiProvider(settings("gemini"), RecordedHttp(body, piece=11))
    chunks = [
        c
        async for c in provider.stream(
            ChatCompletionRequest(messages=[Message(role="user", content="x")]), DEPLOYMENT
        )
    ]
    pieces = [r for c in chunks for r in c.choices[0].delta.reasoning]
    assert {p.index for p in pieces} == {0}
    assert (
        "".join(p.text for p in pieces) == "Thinking."
        and "".join(p.signature for p in pieces) == "c2ln"
    )
    usage = chunks[-1].usage
    assert (usage.completion_tokens, usage.reasoning_tokens, usage.total_tokens) == (3, 2, 6)


def test_embeddings_batch_one_request_per_input_naming_the_model() -> None:
    from ai_service_protos.ai_service_pb2 import EmbedRequest

    provider = GeminiProvider(settings("gemini"))
    body = provider._embed_body(EmbedRequest(inputs=["a", "b"], dimensions=8), DEPLOYMENT)
    assert body == {
        "requests": [
            {
                "model": "models/gemini-2.0-flash",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 8,
            }
            for t in ("a", "b")
        ]
    }

"""Every text of a request that goes upstream, and of an answer, as redaction sees them:
which fields, in which shape, and JSON taken apart into its texts and put back together."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from google.protobuf import struct_pb2

from ai_service.policy import fields
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ContentPart,
    DocumentPart,
    EmbedRequest,
    FunctionDefinition,
    ImagePart,
    Message,
    ReasoningBlock,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)


def seen(request: ChatCompletionRequest) -> list[tuple[str, Any]]:
    return [(text.shape, text.get()) for text in fields.upstream_texts(request)]


def test_every_text_of_a_message_goes_with_its_shape() -> None:
    message = Message(
        role="user",
        content="hello",
        name="bob",
        parts=[
            ContentPart(text="part text"),
            ContentPart(image=ImagePart(url="https://x.example/a.png")),
            ContentPart(image=ImagePart(data=b"\x89PNG", media_type="image/png")),
            ContentPart(document=DocumentPart(url="https://x.example/d.pdf", name="d.pdf")),
            ContentPart(document=DocumentPart(data=b"%PDF", media_type="application/pdf")),
            ContentPart(document=DocumentPart(data=b"%PDF", name="notes.pdf")),
        ],
        reasoning=[
            ReasoningBlock(text="thought"),
            ReasoningBlock(text="signed thought", signature="sig"),
            ReasoningBlock(signature="only a signature"),
        ],
    )
    assert seen(ChatCompletionRequest(messages=[message])) == [
        ("text", "hello"),
        ("text", "part text"),
        ("name", "https://x.example/a.png"),
        ("name", "https://x.example/d.pdf"),
        ("name", "d.pdf"),
        ("name", "notes.pdf"),
        ("text", "thought"),
        ("signed", "signed thought"),
        ("name", "bob"),
    ]


def test_tool_calls_tools_and_the_request_s_own_texts_go_too() -> None:
    schema = '{"type": "object"}'
    request = ChatCompletionRequest(
        messages=[
            Message(
                role="assistant",
                tool_calls=[
                    ToolCall(id="call_1", function={"name": "f", "arguments": '{"a": 1}'}),
                    ToolCall(id="call_2", function={"name": "g"}),
                ],
            ),
            Message(role="tool", tool_call_id="call_1", content="done"),
        ],
        tools=[
            Tool(
                function=FunctionDefinition(name="f", description="does f", parameters_json=schema)
            ),
            Tool(function=FunctionDefinition(name="g")),
        ],
        tool_choice=ToolChoice(function="f"),
        stop=["END", "STOP"],
        user="someone",
        response_format=ResponseFormat(
            type="json_schema", schema_name="answer", json_schema=schema
        ),
    )
    assert seen(request) == [
        ("name", "call_1"),
        ("name", "f"),
        ("json", '{"a": 1}'),
        ("name", "call_2"),
        ("name", "g"),
        ("text", "done"),
        ("name", "call_1"),
        ("name", "f"),
        ("text", "does f"),
        ("json", schema),
        ("name", "g"),
        ("name", "f"),
        ("text", "END"),
        ("text", "STOP"),
        ("text", "someone"),
        ("name", "answer"),
        ("json", schema),
    ]


def test_empty_texts_and_mode_choices_are_left_out() -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user")],
        tool_choice=ToolChoice(mode="auto"),
        response_format=ResponseFormat(type="json_object"),
    )
    assert seen(request) == []
    # A tool_choice that chooses nothing (validation lets it through) has no text.
    request.tool_choice.Clear()
    request.tool_choice.SetInParent()
    assert request.HasField("tool_choice") and seen(request) == []


def test_an_embed_call_s_texts_are_every_input_and_the_user() -> None:
    request = EmbedRequest(model="m", inputs=["first", "second"], user="u-1")
    texts = list(fields.upstream_texts(request))
    assert [(text.shape, text.get()) for text in texts] == [
        ("text", "first"),
        ("text", "second"),
        ("text", "u-1"),
    ]
    texts[1].set("[REDACTED]")
    assert list(request.inputs) == ["first", "[REDACTED]"]
    assert [t.get() for t in fields.upstream_texts(EmbedRequest(inputs=["only"]))] == ["only"]


def test_a_struct_schema_is_a_value_and_is_replaced_whole() -> None:
    struct = struct_pb2.Struct()
    struct.update({"type": "object", "description": "old"})
    request = ChatCompletionRequest(
        tools=[Tool(function=FunctionDefinition(name="f", parameters_struct=struct))]
    )
    (_, schema) = list(fields.upstream_texts(request))
    assert schema.shape == "value"
    assert fields.parsed(schema) == {"type": "object", "description": "old"}
    fields.store(schema, {"type": "object", "description": "new"})
    assert dict(request.tools[0].function.parameters_struct) == {
        "type": "object",
        "description": "new",
    }


def test_each_text_is_replaced_where_it_was() -> None:
    request = ChatCompletionRequest(
        messages=[Message(role="user", content="a", name="n")], stop=["x", "y"], user="u"
    )
    for text in fields.upstream_texts(request):
        text.set(text.get().upper())
    assert request.messages[0].content == "A" and request.messages[0].name == "N"
    assert list(request.stop) == ["X", "Y"] and request.user == "U"


def test_a_json_text_is_parsed_and_stored_as_json() -> None:
    request = ChatCompletionRequest(
        messages=[
            Message(
                role="assistant",
                tool_calls=[
                    ToolCall(id="c", function={"name": "f", "arguments": '{"a": [1, "b"]}'})
                ],
            )
        ]
    )
    arguments = next(t for t in fields.upstream_texts(request) if t.shape == "json")
    assert fields.parsed(arguments) == {"a": [1, "b"]}
    fields.store(arguments, {"a": [2]})
    assert orjson.loads(request.messages[0].tool_calls[0].function.arguments) == {"a": [2]}
    text = next(t for t in fields.upstream_texts(request) if t.shape == "name")
    assert fields.parsed(text) == "c"  # not JSON: as it is
    fields.store(text, "d")
    assert request.messages[0].tool_calls[0].id == "d"


def test_only_signed_text_cannot_be_edited() -> None:
    shapes = {"text": True, "name": True, "json": True, "value": True, "signed": False}
    for shape, editable in shapes.items():
        assert fields.UpstreamText(shape, lambda: "", lambda _: None).editable is editable  # type: ignore[arg-type]


def test_an_answer_s_texts_are_its_choices_content_and_reasoning() -> None:
    response = ChatCompletionResponse()
    response.choices.add(index=0).message.content = "one"
    second = response.choices.add(index=1).message
    second.content = "two"
    second.reasoning.add(text="why", signature="s")
    assert [(t.shape, t.get()) for t in fields.answer_texts(response)] == [
        ("text", "one"),
        ("text", "two"),
        ("signed", "why"),
    ]


def test_a_message_s_text_for_the_audit_log_is_its_content_and_text_parts() -> None:
    message = Message(
        content="first",
        parts=[
            ContentPart(text="second"),
            ContentPart(image=ImagePart(url="https://x.example/a.png")),
            ContentPart(text="third"),
        ],
    )
    assert fields.message_text(message) == "first\nsecond\nthird"
    assert fields.message_text(Message(parts=[ContentPart(text="only")])) == "only"
    assert fields.message_text(Message()) == ""


@pytest.mark.parametrize(
    ("value", "texts"),
    [
        ({"to": "jane", "n": 4111111111111111}, ["to", "jane", "n", "4111111111111111"]),
        ([1.5, True, None, "x"], ["1.5", "x"]),
        ({"a": {"b": [2.0]}}, ["a", "b", "2"]),
        (4111111111111111.0, ["4111111111111111"]),  # a Struct keeps numbers as doubles
        (1e21, ["1e+21"]),
        (1e20, ["1e+20"]),  # from 1e20 on, as Python writes a float
        (-3, ["-3"]),
        ("plain", ["plain"]),
        (None, []),
    ],
)
def test_the_texts_inside_json_keys_strings_and_numbers_as_written(
    value: Any, texts: list[str]
) -> None:
    assert fields.leaves(value) == texts


def test_json_is_rebuilt_with_its_texts_replaced_and_nothing_else_changed() -> None:
    value = {"to": "jane", "n": 4111111111111111, "ok": True, "list": [1.5, None]}
    texts = fields.leaves(value)
    assert fields.rebuilt(value, texts) == value
    changed = ["TO" if t == "to" else "[CARD]" if t == "4111111111111111" else t for t in texts]
    assert fields.rebuilt(value, changed) == {
        "TO": "jane",
        "n": "[CARD]",  # a number whose text changed becomes a string
        "ok": True,
        "list": [1.5, None],
    }

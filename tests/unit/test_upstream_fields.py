"""Redaction screens every text of a request that goes upstream: a new string field in
the proto fails this test until `policy/fields.py` screens it or it is listed here."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from ai_service.policy import fields
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest

#: String fields that never carry a caller's free text upstream: the gateway's own model
#: name, values validation checks against fixed lists, and what stays in the gateway.
NOT_SENT_OR_FIXED = {
    "ChatCompletionRequest.model",
    "Message.role",
    "ToolCall.type",
    "Tool.type",
    "ToolChoice.mode",
    "ResponseFormat.type",
    "ChatCompletionRequest.metadata",
    # Checked against fixed lists by validation.
    "ImagePart.media_type",
    "ImagePart.detail",
    "DocumentPart.media_type",
    "AudioPart.format",
    "CacheControl.type",
    "CacheControl.ttl",
    "ReasoningConfig.effort",
    # A provider's opaque data, sent back byte for byte: the signature covers the text.
    "ReasoningBlock.signature",
    "ReasoningBlock.redacted_data",
}


def _string_fields(descriptor: Descriptor, seen: set[str]) -> set[str]:
    names = set()
    for field in descriptor.fields:
        path = f"{descriptor.name}.{field.name}"
        if field.message_type is not None and field.message_type.full_name.startswith("ai_service"):
            if field.message_type.GetOptions().map_entry:
                names.add(path)
            elif field.message_type.full_name not in seen:
                seen.add(field.message_type.full_name)
                names |= _string_fields(field.message_type, seen)
        elif field.type == FieldDescriptor.TYPE_STRING:
            names.add(path)
    return names


def test_every_string_field_of_a_request_is_screened_or_known_not_to_need_it() -> None:
    strings = _string_fields(ChatCompletionRequest.DESCRIPTOR, set())
    request = ChatCompletionRequest(model="m", user="u-user", stop=["s-stop"])
    message = request.messages.add(role="assistant", content="c-content", name="n-name")
    message.parts.add(text="t-part-text")
    message.parts.add().image.url = "https://example.com/u-image-url"
    document = message.parts.add().document
    document.url, document.name = "https://example.com/u-document-url", "n-document-name"
    message.reasoning.add(text="r-reasoning-text", signature="sig")
    message.tool_call_id = "i-tool-call-id"
    call = message.tool_calls.add(id="i-id", type="function")
    call.function.name = "f-call-name"
    call.function.arguments = '{"a-arguments": 1}'
    function = request.tools.add(type="function").function
    function.name, function.description = "f-name", "d-description"
    function.parameters_json = '{"p-parameters-json": 1}'
    struct = request.tools.add().function
    struct.parameters_struct.update({"p-parameters-struct": 1})
    request.tool_choice.function = "f-choice"
    request.response_format.schema_name = "s-schema-name"
    request.response_format.json_schema = '{"j-json-schema": 1}'
    seen = " ".join(
        " ".join(fields.leaves(fields.parsed(t))) if t.shape in ("json", "value") else t.get()
        for t in fields.upstream_texts(request)
    )
    covered = {
        "Message.content": "c-content",
        "ContentPart.text": "t-part-text",
        "ImagePart.url": "u-image-url",
        "DocumentPart.url": "u-document-url",
        "DocumentPart.name": "n-document-name",
        "ReasoningBlock.text": "r-reasoning-text",
        "Message.name": "n-name",
        "Message.tool_call_id": "i-tool-call-id",
        "ToolCall.id": "i-id",
        "FunctionCall.name": "f-call-name",
        "FunctionCall.arguments": "a-arguments",
        "FunctionDefinition.name": "f-name",
        "FunctionDefinition.description": "d-description",
        "FunctionDefinition.parameters_json": "p-parameters-json",
        "ToolChoice.function": "f-choice",
        "ChatCompletionRequest.stop": "s-stop",
        "ChatCompletionRequest.user": "u-user",
        "ResponseFormat.schema_name": "s-schema-name",
        "ResponseFormat.json_schema": "j-json-schema",
    }
    assert strings == set(covered) | NOT_SENT_OR_FIXED
    for name, marker in covered.items():
        assert marker in seen, name
    assert "p-parameters-struct" in seen

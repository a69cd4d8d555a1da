"""Requests the gateway must refuse, each with the field its refusal names: one table for the
unit tests of validation (tests/unit/test_validation.py) and for the gateway's own refusal
of them (tests/integration/test_validation.py)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from ai_service_protos.ai_service_pb2 import ChatCompletionRequest

USER = {"role": "user", "content": "hi"}
TOOL = {"type": "function", "function": {"name": "f", "parameters_json": "{}"}}
DEEP_JSON = '{"a":' * 300 + "1" + "}" * 300


def request(**fields: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "sim-gpt", "messages": [USER], **fields}
    return json_format.ParseDict(body, ChatCompletionRequest())


BAD_REQUESTS = [
    (request(model=""), "model"),
    (request(model="m" * 20_000), "model"),
    (request(messages=[]), "messages"),
    (request(messages=[USER, {"role": "robot", "content": "x"}]), "messages[1].role"),
    (request(messages=[{"role": "", "content": "x"}]), "messages[0].role"),
    (request(messages=[{"role": "user", "content": ""}]), "messages[0].content"),
    (request(messages=[USER, {"role": "tool", "content": "x"}]), "messages[1].tool_call_id"),
    (
        request(messages=[{"role": "user", "content": "x", "tool_call_id": "c"}]),
        "messages[0].tool_call_id",
    ),
    (
        request(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{oops"}}],
                }
            ]
        ),
        "messages[0].tool_calls[0].function.arguments",
    ),
    (request(temperature=2.5), "temperature"),
    (request(temperature=-0.1), "temperature"),
    (request(temperature="NaN"), "temperature"),
    (request(top_p=1.5), "top_p"),
    (request(presence_penalty=3), "presence_penalty"),
    (request(frequency_penalty=-3), "frequency_penalty"),
    (request(max_tokens=0), "max_tokens"),
    (request(max_tokens=-5), "max_tokens"),
    (request(stop=["a", "b", "c", "d", "e"]), "stop"),
    (request(stop=[""]), "stop[0]"),
    (request(tools=[{"function": {"name": "bad name!"}}]), "tools[0].function.name"),
    (request(tools=[TOOL, TOOL]), "tools[1].function.name"),
    (
        request(tools=[{"function": {"name": "f", "parameters_json": "[1]"}}]),
        "tools[0].function.parameters_json",
    ),
    (
        # Valid JSON, but deeper than any schema needs and than orjson re-encodes.
        request(tools=[{"function": {"name": "f", "parameters_json": DEEP_JSON}}]),
        "tools[0].function.parameters_json",
    ),
    (
        request(response_format={"type": "json_schema", "json_schema": DEEP_JSON}),
        "response_format.json_schema",
    ),
    (request(tools=[{"type": "retrieval", "function": {"name": "f"}}]), "tools[0].type"),
    (request(tool_choice={"mode": "sometimes"}), "tool_choice.mode"),
    (request(tool_choice={"mode": "required"}), "tool_choice.mode"),
    (request(tools=[TOOL], tool_choice={"function": "g"}), "tool_choice.function"),
    (request(response_format={"type": "yaml"}), "response_format.type"),
    (
        request(response_format={"type": "json_schema", "json_schema": "no"}),
        "response_format.json_schema",
    ),
    (request(messages=[{"role": "user", "content": "x" * 2_000_000}]), "request"),
    (request(messages=[USER] * 1025), "messages"),
    (request(tools=[{"function": {"name": f"f{i}"}} for i in range(129)]), "tools"),
    (request(metadata={f"k{i}": "v" for i in range(65)}), "metadata"),
    (request(response_format={}), "response_format.type"),
    (
        request(messages=[{"role": "user", "content": "x", "tool_calls": [{"id": "c1"}]}]),
        "messages[0].tool_calls",
    ),
    (
        request(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]),
        "messages[0].tool_calls[0].id",
    ),
    (
        request(
            messages=[
                {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "a b"}}]}
            ]
        ),
        "messages[0].tool_calls[0].function.name",
    ),
]

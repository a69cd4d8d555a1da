"""Request validation on its own: each refusal names its field and says what is wrong, and
each limit lets through exactly what it allows."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from ai_service.config import ModelSettings, RequestLimits
from ai_service.errors import InvalidRequest
from ai_service.policy.validation import (
    MAX_JSON_NESTING,
    MAX_MODEL_CHARS,
    apply_caller_cap,
    validate_embed,
    validate_for_model,
    validate_request,
)
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, EmbedRequest
from tests.bad_requests import BAD_REQUESTS, TOOL, USER, request

LIMITS = RequestLimits()
SMALL = RequestLimits(
    max_request_bytes=400, max_messages=3, max_tools=2, max_stop_sequences=2, max_metadata_entries=2
)


def refusal(bad: ChatCompletionRequest, limits: RequestLimits = LIMITS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as refused:
        validate_request(bad, limits)
    return refused.value


def nested(depth: int) -> str:
    """A JSON object nested `depth` levels deep (objects and arrays alike)."""
    return '{"a":' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}"


@pytest.mark.parametrize(("bad", "field"), BAD_REQUESTS)
def test_each_bad_request_is_refused_naming_its_field(
    bad: ChatCompletionRequest, field: str
) -> None:
    error = refusal(bad)
    assert (error.field, error.message.split(":")[0]) == (field, field)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (request(model=""), "model: is required"),
        (request(model="m" * 257), "model: is 257 characters; the limit is 256"),
        (request(messages=[]), "messages: must hold at least one message"),
        (
            request(messages=[{"role": "robot", "content": "x"}]),
            "messages[0].role: is 'robot'; expected one of assistant, developer, system, tool, "
            "user",
        ),
        (
            request(messages=[{"role": "", "content": "x"}]),
            "messages[0].role: is empty; expected one of assistant, developer, system, tool, user",
        ),
        (
            request(messages=[{"role": "tool", "content": "x"}]),
            "messages[0].tool_call_id: is required for role 'tool'",
        ),
        (
            request(messages=[{"role": "user", "content": "x", "tool_call_id": "c"}]),
            "messages[0].tool_call_id: is only allowed for role 'tool'",
        ),
        (request(messages=[{"role": "user"}]), "messages[0].content: is empty"),
        (
            request(messages=[{"role": "user", "tool_calls": [{"id": "c"}]}]),
            "messages[0].tool_calls: are only allowed for role 'assistant'",
        ),
        (
            request(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]),
            "messages[0].tool_calls[0].id: is required",
        ),
        (
            request(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}]),
            "messages[0].tool_calls[0].function.name: must be 1-64 letters, digits, underscores "
            "or dashes",
        ),
        (
            request(
                messages=[
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[]"}}],
                    }
                ]
            ),
            "messages[0].tool_calls[0].function.arguments: must be a JSON object",
        ),
        (request(max_tokens=0), "max_tokens: is 0; must be at least 1"),
        (request(temperature=2.5), "temperature: is 2.5; must be between 0 and 2"),
        (request(temperature="Infinity"), "temperature: is inf; must be between 0 and 2"),
        (request(top_p=-0.5), "top_p: is -0.5; must be between 0 and 1"),
        (request(presence_penalty=-2.5), "presence_penalty: is -2.5; must be between -2 and 2"),
        (request(frequency_penalty=2.5), "frequency_penalty: is 2.5; must be between -2 and 2"),
        (request(stop=["a"] * 5), "stop: has 5 sequences; at most 4"),
        (request(stop=["a", ""]), "stop[1]: is empty"),
        (
            request(response_format={"type": "yaml"}),
            "response_format.type: is 'yaml'; expected one of json_object, json_schema, text",
        ),
        (
            request(response_format={"type": "json_schema", "json_schema": "[]"}),
            "response_format.json_schema: must be a JSON object",
        ),
        (
            request(metadata={f"k{i}": "v" for i in range(65)}),
            "metadata: has 65 entries; at most 64 are allowed",
        ),
        (
            request(tools=[{"function": {"name": f"f{i}"}} for i in range(129)]),
            "tools: has 129 tools; at most 128",
        ),
        (
            request(tools=[{"type": "retrieval", "function": {"name": "f"}}]),
            "tools[0].type: is 'retrieval'; only 'function' is supported",
        ),
        (request(tools=[TOOL, TOOL]), "tools[1].function.name: 'f' is declared twice"),
        (
            request(tool_choice={"mode": "sometimes"}),
            "tool_choice.mode: is 'sometimes'; expected one of auto, none, required",
        ),
        (
            request(tool_choice={"mode": "required"}),
            "tool_choice.mode: is 'required' but no tools are given",
        ),
        (
            request(tools=[TOOL], tool_choice={"function": "g"}),
            "tool_choice.function: 'g' is not among tools",
        ),
        (
            request(reasoning={"effort": "extreme"}),
            "reasoning.effort: is 'extreme'; expected one of high, low, medium",
        ),
        (
            request(reasoning={"budget_tokens": 1023}),
            "reasoning.budget_tokens: is 1023; must be at least 1024",
        ),
        (
            request(reasoning={"off": False}),
            "reasoning.off: is false; to reason, set effort or budget_tokens instead",
        ),
        (
            request(tools=[{"function": {"name": "f", "parameters_json": nested(65)}}]),
            "tools[0].function.parameters_json: is nested deeper than 64 levels",
        ),
    ],
)
def test_each_refusal_says_what_is_wrong(bad: ChatCompletionRequest, message: str) -> None:
    assert refusal(bad).message == message


def test_a_json_text_that_does_not_parse_is_said_to_be_invalid() -> None:
    bad = request(tools=[{"function": {"name": "f", "parameters_json": "{oops"}}])
    assert refusal(bad).message.startswith("tools[0].function.parameters_json: is not valid JSON (")


@pytest.mark.parametrize(
    "good",
    [
        request(model="m" * MAX_MODEL_CHARS),
        request(messages=[{"role": role, "content": "x"} for role in ("system", "developer")]),
        request(messages=[USER, {"role": "assistant", "content": "x"}]),
        request(messages=[{"role": "tool", "tool_call_id": "c"}]),  # a tool may return nothing
        request(
            messages=[  # the arguments may be left out: no arguments
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "done"},
            ]
        ),
        request(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "function": {"name": "a" * 64, "arguments": '{"x": 1}'}},
                        {"id": "d", "function": {"name": "Az09_-", "arguments": "{}"}},
                    ],
                }
            ]
        ),
        request(max_tokens=1),
        request(temperature=0),
        request(temperature=2),
        request(top_p=0),
        request(top_p=1),
        request(presence_penalty=-2, frequency_penalty=2),
        request(stop=["a", "b", "c", "d"]),
        request(metadata={f"k{i}": "v" for i in range(64)}),
        request(tools=[{"function": {"name": f"f{i}"}} for i in range(128)]),
        request(
            tools=[{"type": "function", "function": {"name": "f"}}, {"function": {"name": "g"}}]
        ),
        request(tools=[TOOL], tool_choice={"mode": "required"}),
        request(tools=[TOOL], tool_choice={"function": "f"}),
        request(tool_choice={"mode": "none"}),
        request(response_format={"type": "json_schema", "json_schema": '{"type": "object"}'}),
        request(response_format={"type": "text"}),
        request(response_format={"type": "json_object"}),  # needs no schema
        request(metadata={"team": "search"}),
        request(tool_choice={}),  # a tool choice that chooses nothing
        request(tools=[TOOL], tool_choice={}),
        request(reasoning={"effort": "low"}),
        request(reasoning={"budget_tokens": 1024}),
        request(reasoning={"budget_tokens": 2048}),
        request(reasoning={"include_text": True}),  # only asks for its text
        request(reasoning={"off": True}),
        request(tools=[{"function": {"name": "f", "parameters_json": nested(MAX_JSON_NESTING)}}]),
    ],
)
def test_what_each_limit_allows_passes(good: ChatCompletionRequest) -> None:
    validate_request(good, LIMITS)


def test_the_configured_limits_apply_exactly() -> None:
    validate_request(request(messages=[USER] * 3, stop=["a", "b"]), SMALL)
    assert refusal(request(messages=[USER] * 4), SMALL).message == (
        "messages: has 4 messages; at most 3"
    )
    assert refusal(request(stop=["a", "b", "c"]), SMALL).field == "stop"
    assert refusal(request(metadata={"a": "1", "b": "2", "c": "3"}), SMALL).field == "metadata"
    tools = [{"function": {"name": name}} for name in "abc"]
    assert refusal(request(tools=tools), SMALL).message == "tools: has 3 tools; at most 2"


def test_a_request_is_measured_in_bytes_less_its_media() -> None:
    limits = RequestLimits(max_request_bytes=200)
    text = request(messages=[{"role": "user", "content": "x" * 150}])
    size = text.ByteSize()
    validate_request(text, RequestLimits(max_request_bytes=size))
    assert refusal(text, RequestLimits(max_request_bytes=size - 1)).message == (
        f"request: is {size} bytes; the limit is {size - 1} bytes"
    )
    image = {"image": {"data": "QUJD" * 100, "media_type": "image/png"}}
    with_media = request(messages=[{"role": "user", "content": "look", "parts": [image]}])
    assert with_media.ByteSize() > 200
    validate_request(with_media, limits)  # the image's bytes are not counted here


def test_the_whole_request_is_checked_not_only_its_first_fields() -> None:
    # Each field set is checked by its own rule, whatever else is set.
    bad = request(temperature=1, top_p=0.5, stop=["x"], max_tokens=10, presence_penalty=9)
    assert refusal(bad).field == "presence_penalty"


# -- Embed -------------------------------------------------------------------------------


def embed(**fields: Any) -> EmbedRequest:
    return EmbedRequest(**{"model": "e", "inputs": ["a"], **fields})


def embed_refusal(bad: EmbedRequest, limits: RequestLimits = LIMITS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as refused:
        validate_embed(bad, limits)
    return refused.value


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (embed(model=""), "model: is required"),
        (embed(model="m" * 257), "model: is 257 characters; the limit is 256"),
        (embed(inputs=[]), "inputs: must hold at least one text"),
        (embed(inputs=["a"] * 2049), "inputs: has 2049 texts; at most 2048"),
        (embed(dimensions=0), "dimensions: is 0; must be at least 1"),
        (embed(encoding_format="hex"), "encoding_format: is 'hex'; expected float or base64"),
        (
            embed(metadata={f"k{i}": "v" for i in range(65)}),
            "metadata: has 65 entries; at most 64 are allowed",
        ),
    ],
)
def test_each_embed_refusal_says_what_is_wrong(bad: EmbedRequest, message: str) -> None:
    assert embed_refusal(bad).message == message


def test_every_empty_input_is_named_at_once() -> None:
    error = embed_refusal(embed(inputs=["a", "", "b", ""]))
    assert (error.field, error.description, error.more) == (
        "inputs[1]",
        "is empty",
        (("inputs[3]", "is empty"),),
    )


def test_an_embed_request_over_the_size_limit_is_refused() -> None:
    bad = embed(inputs=["x" * 300])
    size = bad.ByteSize()
    validate_embed(bad, RequestLimits(max_request_bytes=size))
    assert embed_refusal(bad, RequestLimits(max_request_bytes=size - 1)).message == (
        f"request: is {size} bytes; the limit is {size - 1} bytes"
    )


@pytest.mark.parametrize(
    "good",
    [
        embed(model="m" * MAX_MODEL_CHARS, inputs=["a"] * 2048, dimensions=1),
        embed(encoding_format="float"),
        embed(encoding_format="base64"),
        embed(metadata={f"k{i}": "v" for i in range(64)}),
        embed(dimensions=2),  # any number of dimensions from one
        embed(dimensions=3072),
    ],
)
def test_what_each_embed_limit_allows_passes(good: EmbedRequest) -> None:
    validate_embed(good, LIMITS)


# -- the model's and the key's caps ------------------------------------------------------


def model(**settings: Any) -> ModelSettings:
    return ModelSettings.model_validate(
        {"name": "m", "provider": "p", "upstream_model": "u", **settings}
    )


def test_max_tokens_over_the_model_s_cap_is_refused_naming_the_model_asked_for() -> None:
    capped = model(max_output_tokens=100)
    validate_for_model(request(max_tokens=100), capped)
    validate_for_model(request(), capped)
    validate_for_model(request(max_tokens=10_000), model())
    with pytest.raises(InvalidRequest) as refused:
        validate_for_model(request(model="asked", max_tokens=101), capped)
    assert refused.value.message == "max_tokens: is 101; 'asked' allows 100"


def test_a_key_s_cap_refuses_more_and_is_imposed_where_none_was_asked() -> None:
    asked = request(max_tokens=50)
    apply_caller_cap(asked, "k", 50, model())
    assert asked.max_tokens == 50
    with pytest.raises(InvalidRequest) as refused:
        apply_caller_cap(request(max_tokens=51), "k", 50, model())
    assert refused.value.message == "max_tokens: is 51; key 'k' may ask for at most 50"
    unset = request()
    apply_caller_cap(unset, "k", 50, model())
    assert unset.max_tokens == 50
    under_the_model = request()
    apply_caller_cap(under_the_model, "k", 50, model(max_output_tokens=30))
    assert under_the_model.max_tokens == 30
    over_the_model = request()
    apply_caller_cap(over_the_model, "k", 50, model(max_output_tokens=80))
    assert over_the_model.max_tokens == 50


def test_a_key_without_a_cap_changes_nothing() -> None:
    unset = request()
    apply_caller_cap(unset, "k", None, model(max_output_tokens=30))
    assert not unset.HasField("max_tokens")


# -- what lies inside a limit, and what the first checks would miss ----------------------


def image(size: int) -> dict[str, Any]:
    """A content part holding an inline image of `size` bytes."""
    return {"image": {"data": base64.b64encode(bytes(size)).decode(), "media_type": "image/png"}}


def test_content_parts_are_counted_over_all_the_messages() -> None:
    texts = [{"text": "x"}] * 32
    validate_request(
        request(messages=[{"role": "user", "parts": texts}, {"role": "user", "parts": texts}]),
        LIMITS,
    )
    over = request(
        messages=[{"role": "user", "parts": texts}, {"role": "user", "parts": [*texts, *texts[:1]]}]
    )
    assert refusal(over).message == (
        "messages[1].parts: bring the request to more than 64 content parts"
    )


def test_media_bytes_are_counted_over_all_the_messages() -> None:
    half = 3 * 1024 * 1024  # the documented limit is 6 MiB, spread here over two messages
    at_the_limit = request(
        messages=[
            {"role": "user", "parts": [image(half)]},
            {"role": "user", "parts": [image(half)]},
        ]
    )
    validate_request(at_the_limit, LIMITS)
    one_byte_over = request(
        messages=[
            {"role": "user", "parts": [image(half)]},
            {"role": "user", "parts": [image(half + 1)]},
        ]
    )
    assert refusal(one_byte_over).message == (
        "messages[1].parts[0]: brings the request's images, documents and audio to 6291457 "
        "bytes; the limit is 6291456 bytes"
    )


def test_each_part_of_a_message_is_checked() -> None:
    bad = request(messages=[{"role": "user", "parts": [{"text": "x"}, {}]}])
    assert refusal(bad).message == (
        "messages[0].parts[1]: sets no content: give text, image, document or audio"
    )


def test_a_message_s_cache_mark_needs_the_message_s_content() -> None:
    mark = {"type": "ephemeral"}
    validate_request(
        request(messages=[{"role": "user", "content": "x", "cache_control": mark}]), LIMITS
    )
    parts_only = request(
        messages=[{"role": "user", "parts": [{"text": "x"}], "cache_control": mark}]
    )
    assert refusal(parts_only).message == (
        "messages[0].cache_control: marks the message's content, which is empty; mark one of "
        "its parts instead"
    )


@pytest.mark.parametrize("role", ["system", "developer", "user", "assistant"])
def test_only_a_tool_may_send_an_empty_message(role: str) -> None:
    assert refusal(request(messages=[{"role": role}])).message == "messages[0].content: is empty"


def test_a_tool_s_cache_mark_is_checked() -> None:
    validate_request(request(tools=[{**TOOL, "cache_control": {"ttl": "1h"}}]), LIMITS)
    bad = request(tools=[{**TOOL, "cache_control": {"type": "persistent"}}])
    assert (
        refusal(bad).message == "tools[0].cache_control.type: is 'persistent'; expected 'ephemeral'"
    )


def test_json_is_measured_at_its_deepest_branch_wherever_it_lies() -> None:
    # The deep branch comes first, a plain value after it: both must be looked at.
    schema = '{"properties": ' + nested(64) + ', "type": "object"}'  # 65 levels
    bad = request(tools=[{"function": {"name": "f", "parameters_json": schema}}])
    assert refusal(bad).message == (
        "tools[0].function.parameters_json: is nested deeper than 64 levels"
    )


def test_max_tokens_under_the_model_s_cap_passes() -> None:
    validate_for_model(request(max_tokens=1), model(max_output_tokens=100))
    validate_for_model(request(max_tokens=100_000), model(max_output_tokens=100_000))


def test_max_tokens_under_a_key_s_cap_is_kept_as_asked() -> None:
    asked = request(max_tokens=49)
    apply_caller_cap(asked, "k", 50, model())
    assert asked.max_tokens == 49
    at_a_large_cap = request(max_tokens=100_000)
    apply_caller_cap(at_a_large_cap, "k", 100_000, model())
    assert at_a_large_cap.max_tokens == 100_000

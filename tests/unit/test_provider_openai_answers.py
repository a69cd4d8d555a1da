"""What OpenAI's answers and stream chunks become in the gateway's messages.

A chat.completion answer becomes a ChatCompletionResponse and each chat.completion.chunk
event a ChatCompletionChunk: id, model, time, choice and tool-call indexes, the role,
refusals, finish reasons and usage, as OpenAI (and the compatible servers the adapter
serves) send them on the wire (https://platform.openai.com/docs/api-reference/chat/object,
https://platform.openai.com/docs/api-reference/chat-streaming). Inputs are the documented
fixtures of tests/fixtures/openai, or events in their exact shape.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ai_service.providers.openai import _plain_text_delta, response_from_openai
from tests.fixtures import lines, load_bytes, load_json
from tests.fixtures.provider_streams import (
    REFUSAL,
    openai_stream,
    openai_stream_bytes,
    streamed_text,
)


def _event(*choices: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A chat.completion.chunk event with the given choices."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": list(choices),
        **fields,
    }


def _delta(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _finish(reason: str = "stop") -> dict[str, Any]:
    return _event(_delta({}, reason))


USAGE = _event(usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12})


# --- answers ---------------------------------------------------------------------------


def test_an_answer_keeps_its_id_model_time_choice_finish_and_usage() -> None:
    response = response_from_openai(load_json("openai/content_response.json"))
    assert (response.id, response.model, response.created) == (
        "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "o4-mini-2025-04-16",
        1741570283,
    )
    (choice,) = response.choices
    assert (choice.index, choice.message.role, choice.finish_reason) == (0, "assistant", "stop")
    assert choice.message.content == "The image shows an ant on a leaf."
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1117, 46, 1163)
    assert (usage.cached_tokens, usage.cache_write_tokens, usage.reasoning_tokens) == (1024, 0, 32)


def test_an_answer_leaving_out_id_model_time_index_and_role_gets_their_defaults() -> None:
    # Compatible servers send fewer fields than OpenAI; the message is the assistant's.
    payload = load_json("openai/content_response.json")
    for name in ("id", "model", "created"):
        del payload[name]
    del payload["choices"][0]["index"]
    del payload["choices"][0]["message"]["role"]
    response = response_from_openai(payload)
    assert (response.id, response.model, response.created) == ("", "", 0)
    (choice,) = response.choices
    assert (choice.index, choice.message.role) == (0, "assistant")
    assert choice.message.content == "The image shows an ant on a leaf."


def test_the_choices_of_an_answer_keep_their_index() -> None:
    payload = load_json("openai/content_response.json")
    payload["choices"].append(
        {
            "index": 1,
            "message": {"role": "assistant", "content": "An ant on a green leaf.", "refusal": None},
            "logprobs": None,
            "finish_reason": "length",
        }
    )
    choices = response_from_openai(payload).choices
    assert [(c.index, c.message.content, c.finish_reason) for c in choices] == [
        (0, "The image shows an ant on a leaf.", "stop"),
        (1, "An ant on a green leaf.", "length"),
    ]


@pytest.mark.parametrize("reason", ["length", "tool_calls"])
def test_a_refusal_ending_otherwise_than_stop_keeps_its_finish_reason(reason: str) -> None:
    # Only a refusal's "stop" becomes "content_filter".
    payload = load_json("openai/content_response.json")
    payload["choices"][0].update(
        message={"role": "assistant", "content": None, "refusal": REFUSAL}, finish_reason=reason
    )
    choice = response_from_openai(payload).choices[0]
    assert (choice.message.content, choice.finish_reason) == (REFUSAL, reason)


def test_a_tool_call_without_a_type_is_a_function_call() -> None:
    payload = load_json("openai/tool_calls_response.json")
    del payload["choices"][0]["message"]["tool_calls"][0]["type"]
    (call,) = response_from_openai(payload).choices[0].message.tool_calls
    assert (call.id, call.type, call.function.name) == (
        "call_abc123",
        "function",
        "get_current_weather",
    )


@pytest.mark.parametrize(
    ("usage", "counts"),
    [
        # Without `total_tokens`, the total is the sum of the two counts.
        ({"prompt_tokens": 6, "completion_tokens": 12}, (6, 12, 18)),
        ({"completion_tokens": 12}, (0, 12, 12)),
        ({"prompt_tokens": 6, "completion_tokens": None}, (6, 0, 6)),
        ({"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}, (82, 17, 99)),
    ],
)
def test_usage_counts_left_out_are_zero_and_a_missing_total_is_their_sum(
    usage: dict[str, Any], counts: tuple[int, int, int]
) -> None:
    payload = load_json("openai/content_response.json")
    payload["usage"] = usage
    got = response_from_openai(payload).usage
    assert (got.prompt_tokens, got.completion_tokens, got.total_tokens) == counts
    assert (got.cached_tokens, got.cache_write_tokens, got.reasoning_tokens) == (0, 0, 0)


def test_reasoning_tokens_reported_as_zero_are_zero() -> None:
    usage = response_from_openai(load_json("openai/tool_calls_response.json")).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (82, 17, 99)
    assert (usage.cached_tokens, usage.reasoning_tokens) == (0, 0)


# --- stream chunks ---------------------------------------------------------------------


async def test_every_chunk_of_a_stream_keeps_the_events_id_model_and_time() -> None:
    chunks = await openai_stream_bytes(load_bytes("openai/stream_tool_calls.sse"))
    assert chunks
    assert {(c.id, c.model, c.created) for c in chunks} == {
        ("chatcmpl-123", "gpt-4o-mini", 1694268190)
    }


async def test_events_without_a_time_give_chunks_without_one() -> None:
    # A compatible server that leaves `created` out: text read straight from the JSON
    # and fully translated events alike.
    events = [
        _event(_delta({"role": "assistant", "content": ""})),
        _event(_delta({"content": "Hello"})),
        _finish(),
    ]
    for event in events:
        del event["created"]
    chunks = await openai_stream(*events)
    assert len(chunks) == 2
    assert {(c.id, c.model, c.created) for c in chunks} == {("chatcmpl-1", "gpt-4o-mini", 0)}


async def test_the_choices_of_a_stream_keep_their_index() -> None:
    chunks = await openai_stream(
        _event(_delta({"role": "assistant", "content": ""}, index=0)),
        _event(_delta({"role": "assistant", "content": ""}, index=1)),
        _event(_delta({"content": "Hello"}, index=0)),
        _event(_delta({"content": "Bonjour"}, index=1)),
        _event(_delta({}, "stop", index=0), _delta({}, "stop", index=1)),
        USAGE,
    )
    roles: dict[int, str] = {}
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            roles[choice.index] = roles.get(choice.index, "") + choice.delta.role
            texts[choice.index] = texts.get(choice.index, "") + choice.delta.content
    assert roles == {0: "assistant", 1: "assistant"}
    assert texts == {0: "Hello", 1: "Bonjour"}
    assert [(c.index, c.finish_reason) for c in chunks[-1].choices] == [(0, "stop"), (1, "stop")]


async def test_parallel_tool_calls_stream_with_their_index_id_and_type() -> None:
    def call(index: int, **fields: Any) -> dict[str, Any]:
        return _event(_delta({"tool_calls": [{"index": index, **fields}]}))

    def name(name: str) -> dict[str, Any]:
        return {"name": name, "arguments": ""}

    chunks = await openai_stream(
        _event(
            _delta(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_abc123",
                            "type": "function",
                            "function": name("get_current_weather"),
                        }
                    ],
                }
            )
        ),
        call(0, function={"arguments": '{"location": "Boston, MA"}'}),
        call(1, id="call_def456", type="function", function=name("get_current_weather")),
        call(1, function={"arguments": '{"location": "Paris"}'}),
        _finish("tool_calls"),
        USAGE,
    )
    pieces = [p for c in chunks for ch in c.choices for p in ch.delta.tool_calls]
    assert [(p.index, p.id, p.type, p.function.name, p.function.arguments) for p in pieces] == [
        (0, "call_abc123", "function", "get_current_weather", '{"location": "Boston, MA"}'),
        (1, "call_def456", "function", "get_current_weather", '{"location": "Paris"}'),
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_the_role_beside_the_first_empty_text_is_carried() -> None:
    # The first event as OpenAI (before `refusal` existed) and vLLM send it.
    chunks = await openai_stream(
        _event(_delta({"role": "assistant", "content": ""})),
        _event(_delta({"content": "Hello"})),
        _event(_delta({"content": " there!"})),
        _finish(),
        USAGE,
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert streamed_text(chunks) == "Hello there!"
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_text_beside_an_empty_text_is_carried(field: str) -> None:
    # Compatible servers stream reasoning under either name, some with `content: ""`.
    chunks = await openai_stream(
        _event(_delta({"role": "assistant", "content": "", field: ""})),
        _event(_delta({"content": "", field: "Okay, the user says hi."})),
        _event(_delta({"content": "Hello!", field: None})),
        _finish(),
        USAGE,
    )
    reasoning = [r.text for c in chunks for ch in c.choices for r in ch.delta.reasoning]
    assert reasoning == ["Okay, the user says hi."]
    assert streamed_text(chunks) == "Hello!"


async def test_text_arriving_with_the_finish_reason_ends_the_stream() -> None:
    chunks = await openai_stream(
        _event(_delta({"role": "assistant", "content": ""})),
        _event(_delta({"content": "Hello"})),
        _event(_delta({"content": " there!"}, "stop")),
        USAGE,
    )
    assert streamed_text(chunks) == "Hello there!"
    last = chunks[-1]
    assert (last.choices[0].finish_reason, last.usage.total_tokens) == ("stop", 12)


@pytest.mark.parametrize("content", [None, ""])
async def test_a_streamed_refusal_beside_null_or_empty_content_is_the_answer(
    content: str | None,
) -> None:
    # OpenAI streams a structured-output refusal with `content: null` beside it; Azure
    # OpenAI is reported to send `""` there.
    chunks = await openai_stream(
        _event(_delta({"role": "assistant", "content": content, "refusal": ""})),
        *(_event(_delta({"content": content, "refusal": p})) for p in (REFUSAL[:10], REFUSAL[10:])),
        _finish(),
        USAGE,
    )
    assert streamed_text(chunks) == REFUSAL
    assert chunks[-1].choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize("reason", ["length", "tool_calls"])
async def test_a_streamed_refusal_ending_otherwise_than_stop_keeps_its_finish_reason(
    reason: str,
) -> None:
    chunks = await openai_stream(
        *(_event(_delta({"content": None, "refusal": p})) for p in (REFUSAL[:10], REFUSAL[10:])),
        _finish(reason),
        USAGE,
    )
    assert streamed_text(chunks) == REFUSAL
    assert chunks[-1].choices[0].finish_reason == reason


def _fixture_events(name: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line.removeprefix(b"data: "))
        for line in lines(name)
        if line.startswith(b"data: {")
    ]


DEEPSEEK = _fixture_events("openai/stream_reasoning_content.sse")


@pytest.mark.parametrize(
    ("event", "plain"),
    [
        (_event(_delta({"content": "Hello"})), (0, "Hello")),
        (_event(_delta({"content": "Bonjour"}, index=1)), (1, "Bonjour")),
        # DeepSeek's text events carry `reasoning_content: null` beside the text.
        (DEEPSEEK[3], (0, "Hello!")),
        # Anything else takes the full translation.
        (DEEPSEEK[0], None),
        (DEEPSEEK[1], None),
        (DEEPSEEK[4], None),
        (_event(_delta({"content": "!"}, "stop")), None),
        (_event(_delta({"content": None, "refusal": REFUSAL})), None),
        (_event(_delta({"content": "", "tool_calls": [{"index": 0}]})), None),
    ],
)
def test_a_text_only_event_is_read_straight_from_the_json(
    event: dict[str, Any], plain: tuple[int, str] | None
) -> None:
    # The full translation makes the same chunk of a text-only event; what this fast
    # path saves (most events of a stream need no chunk of their own) shows only here.
    assert _plain_text_delta(event) == plain


async def test_a_delta_whose_content_is_null_adds_nothing_and_breaks_nothing() -> None:
    # Compatible servers send `"content": null` in deltas that carry nothing else.
    chunks = await openai_stream(
        _event(_delta({"role": "assistant", "content": ""})),
        _event(_delta({"content": None})),
        _event(_delta({"content": "Hello"})),
        _event(_delta({"content": None})),
        _event(_delta({"content": " there"})),
        _finish(),
        USAGE,
    )
    assert streamed_text(chunks) == "Hello there"
    assert chunks[-1].choices[0].finish_reason == "stop"

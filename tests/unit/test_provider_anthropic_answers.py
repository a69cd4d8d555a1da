"""What Anthropic's answers and stream events become in the gateway's messages.

A Messages API answer (https://docs.claude.com/en/api/messages) becomes a
ChatCompletionResponse: its model, choice 0, the text of its text blocks only (the
blocks of server tools such as web search and code execution have no place in the
service's message), and usage whose total counts the cache reads and writes. Each
stream event (https://docs.claude.com/en/docs/build-with-claude/streaming) becomes
chunks: the model of `message_start` on every chunk, no chunk that adds nothing, text,
thinking and signatures that arrive whole on a block's start event, `{}` as the
arguments of a tool call whose input never streamed (at that call's own index),
citations deltas and unknown event types left out, and an `error` event of a type the
errors table does not list taken as a server error. Inputs are the documented fixtures
of tests/fixtures/anthropic, or answers and events in their exact shape.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
import pytest

from ai_service.errors import UpstreamUnavailable
from ai_service.providers.anthropic import (
    AnthropicProvider,
    StreamTranslator,
    response_from_anthropic,
)
from ai_service.providers.translation import is_empty
from ai_service_protos.ai_service_pb2 import ChatCompletionChunk
from tests.fixtures import RecordedHttp, load_json, settings
from tests.fixtures.provider_streams import (
    ANTHROPIC_DEPLOYMENT,
    ANTHROPIC_REQUEST,
    anthropic_stream,
    anthropic_stream_fixture,
    streamed_text,
)

#: The web search tool's answer (docs.claude.com/en/docs/agents-and-tools/tool-use/web-search-tool).
WEB_SEARCH_ANSWER: dict[str, Any] = {
    "role": "assistant",
    "content": [
        {"type": "text", "text": "I'll search for when Claude Shannon was born."},
        {
            "type": "server_tool_use",
            "id": "srvtoolu_01WYG3ziw53XMcoyKL4XcZmE",
            "name": "web_search",
            "input": {"query": "claude shannon birth date"},
        },
        {
            "type": "web_search_tool_result",
            "tool_use_id": "srvtoolu_01WYG3ziw53XMcoyKL4XcZmE",
            "content": [
                {
                    "type": "web_search_result",
                    "url": "https://en.wikipedia.org/wiki/Claude_Shannon",
                    "title": "Claude Shannon - Wikipedia",
                    "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1Mi1mZjM5LTQ1NGUt"
                    "ODgxNC1kNjNjNTk1ZWI3Y...",
                    "page_age": "April 30, 2025",
                }
            ],
        },
        {"text": "Based on the search results, ", "type": "text"},
        {
            "text": "Claude Shannon was born on April 30, 1916, in Petoskey, Michigan",
            "type": "text",
            "citations": [
                {
                    "type": "web_search_result_location",
                    "url": "https://en.wikipedia.org/wiki/Claude_Shannon",
                    "title": "Claude Shannon - Wikipedia",
                    "encrypted_index": "Eo8BCioIAhgBIiQyYjQ0OWJmZi1lNm..",
                    "cited_text": "Claude Elwood Shannon (April 30, 1916 \u2013 February 24, 2001) "
                    "was an "
                    "American mathematician, electrical engineer, computer scientist, "
                    "cryptographer and i...",
                }
            ],
        },
    ],
    "id": "msg_a930390d3489",
    "usage": {
        "input_tokens": 6039,
        "output_tokens": 931,
        "server_tool_use": {"web_search_requests": 1},
    },
    "stop_reason": "end_turn",
}
WEB_SEARCH_TEXT = (
    "I'll search for when Claude Shannon was born."
    "Based on the search results, "
    "Claude Shannon was born on April 30, 1916, in Petoskey, Michigan"
)

#: The code execution tool's answer
#: (docs.claude.com/en/docs/agents-and-tools/tool-use/code-execution-tool).
CODE_EXECUTION_ANSWER: dict[str, Any] = {
    "role": "assistant",
    "container": {
        "id": "container_011CPR5CNjB747bTd36fQLFk",
        "expires_at": "2025-05-23T21:13:31.749448Z",
    },
    "content": [
        {"type": "text", "text": "I'll calculate the mean and standard deviation for you."},
        {
            "type": "server_tool_use",
            "id": "srvtoolu_01A2B3C4D5E6F7G8H9I0J1K2",
            "name": "code_execution",
            "input": {
                "code": "import numpy as np\ndata = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
                "mean = np.mean(data)\nstd = np.std(data)\n"
                'print(f"Mean: {mean}")\nprint(f"Standard deviation: {std}")'
            },
        },
        {
            "type": "code_execution_tool_result",
            "tool_use_id": "srvtoolu_01A2B3C4D5E6F7G8H9I0J1K2",
            "content": {
                "type": "code_execution_result",
                "stdout": "Mean: 5.5\nStandard deviation: 2.8722813232690143\n",
                "stderr": "",
                "return_code": 0,
            },
        },
        {
            "type": "text",
            "text": "The mean of the dataset is 5.5 and the standard deviation is "
            "approximately 2.87.",
        },
    ],
    "id": "msg_01BqK2v4FnRs4xTjgL8EuZxz",
    "model": "claude-opus-4-20250514",
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 45, "output_tokens": 187},
}
CODE_EXECUTION_TEXT = (
    "I'll calculate the mean and standard deviation for you."
    "The mean of the dataset is 5.5 and the standard deviation is approximately 2.87."
)

MESSAGE_START: dict[str, Any] = {
    "type": "message_start",
    "message": {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-5",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1},
    },
}
MESSAGE_STOP: dict[str, Any] = {"type": "message_stop"}


def _message_delta(stop_reason: str, output_tokens: int) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }


def _start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def _reasoning(chunks: list[ChatCompletionChunk]) -> list[tuple[int, str, str, str]]:
    return [
        (piece.index, piece.text, piece.signature, piece.redacted_data)
        for chunk in chunks
        for choice in chunk.choices
        for piece in choice.delta.reasoning
    ]


# --- answers ---------------------------------------------------------------------------


def test_an_answer_keeps_its_model_in_choice_zero() -> None:
    response = response_from_anthropic(load_json("anthropic/tool_use_response.json"))
    assert (response.id, response.model) == ("msg_01Aq9w938a90dw8q", "claude-opus-4-1-20250805")
    assert [choice.index for choice in response.choices] == [0]
    assert response.choices[0].message.role == "assistant"


def test_the_total_counts_cache_writes_and_reads_with_the_answer() -> None:
    # 21 input + 188086 cache writes + 0 cache reads, and 393 output tokens.
    usage = response_from_anthropic(load_json("anthropic/thinking_response.json")).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        188107,
        393,
        188500,
    )


@pytest.mark.parametrize(
    ("answer", "text"),
    [(WEB_SEARCH_ANSWER, WEB_SEARCH_TEXT), (CODE_EXECUTION_ANSWER, CODE_EXECUTION_TEXT)],
    ids=["web search", "code execution"],
)
async def test_a_server_tools_blocks_leave_only_the_answers_text(
    answer: dict[str, Any], text: str
) -> None:
    provider = AnthropicProvider(settings("anthropic"), RecordedHttp(orjson.dumps(answer)))
    response = await provider.complete(ANTHROPIC_REQUEST, ANTHROPIC_DEPLOYMENT)
    (choice,) = response.choices
    assert choice.message.content == text
    assert (list(choice.message.tool_calls), list(choice.message.reasoning)) == ([], [])
    assert choice.finish_reason == "stop"


# --- streams ---------------------------------------------------------------------------


async def test_every_chunk_of_a_stream_carries_the_model_of_message_start() -> None:
    chunks = await anthropic_stream_fixture("anthropic/stream_text.sse")
    assert {chunk.model for chunk in chunks} == {"claude-opus-4-1-20250805"}


async def test_no_chunk_of_the_documented_text_stream_adds_nothing() -> None:
    # The text block starts with "": that start is no chunk of its own.
    chunks = await anthropic_stream_fixture("anthropic/stream_text.sse")
    assert [chunk for chunk in chunks if is_empty(chunk)] == []
    assert streamed_text(chunks) == "Hello!"


async def test_text_arriving_on_a_blocks_start_event_is_kept() -> None:
    chunks = await anthropic_stream(
        MESSAGE_START,
        _start(0, {"type": "text", "text": "Hello"}),
        _delta(0, {"type": "text_delta", "text": ", world"}),
        _stop(0),
        _message_delta("end_turn", 4),
        MESSAGE_STOP,
    )
    assert streamed_text(chunks) == "Hello, world"


def test_a_block_type_is_compared_by_value_in_an_event_built_in_python() -> None:
    # A type string made at run time is not the interned "text" literal the adapter holds,
    # as one parsed from the wire is not: only a comparison by value (==, not `is`) reads it.
    runtime_text = "".join(["te", "xt"])
    assert runtime_text is not sys.intern("text")  # the premise: two distinct objects
    translator = StreamTranslator("anthropic-docs")
    translator.feed(MESSAGE_START)
    (chunk,) = translator.feed(_start(0, {"type": runtime_text, "text": "Hello"}))
    assert chunk.choices[0].delta.content == "Hello"


async def test_the_documented_thinking_stream_has_no_empty_reasoning_piece() -> None:
    # The thinking block starts with "" text and "" signature: that start is no piece.
    chunks = await anthropic_stream_fixture("anthropic/stream_thinking.sse")
    assert _reasoning(chunks) == [
        (0, "Let me solve this step by step:\n\n1. First break down 27 * 453", "", ""),
        (0, "\n2. 453 = 400 + 50 + 3", "", ""),
        (0, "", "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds...", ""),
        (1, "", "", "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"),
    ]


async def test_thinking_arriving_whole_on_its_start_event_keeps_text_and_signature() -> None:
    chunks = await anthropic_stream(
        MESSAGE_START,
        _start(
            0,
            {
                "type": "thinking",
                "thinking": "Let me analyze this step by step...",
                "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG",
            },
        ),
        _stop(0),
        _start(1, {"type": "text", "text": ""}),
        _delta(1, {"type": "text_delta", "text": "Based on my analysis..."}),
        _stop(1),
        _message_delta("end_turn", 40),
        MESSAGE_STOP,
    )
    assert _reasoning(chunks) == [
        (
            0,
            "Let me analyze this step by step...",
            "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG",
            "",
        )
    ]
    assert streamed_text(chunks) == "Based on my analysis..."


async def test_an_empty_thinking_delta_adds_nothing() -> None:
    chunks = await anthropic_stream(
        MESSAGE_START,
        _start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        _delta(0, {"type": "thinking_delta", "thinking": ""}),
        _delta(0, {"type": "thinking_delta", "thinking": "2 + 2 = 4"}),
        _delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}),
        _stop(0),
        _message_delta("end_turn", 10),
        MESSAGE_STOP,
    )
    assert _reasoning(chunks) == [(0, "2 + 2 = 4", "", ""), (0, "", "EqQBCgIYAhIM", "")]


async def test_citations_deltas_are_left_out_and_the_text_kept() -> None:
    # The citations guide's stream: a citations_delta follows the text it supports.
    citation = {
        "type": "char_location",
        "cited_text": "The grass is green. ",
        "document_index": 0,
        "document_title": "Example Document",
        "start_char_index": 0,
        "end_char_index": 20,
    }
    chunks = await anthropic_stream(
        MESSAGE_START,
        _start(0, {"type": "text", "text": ""}),
        _delta(0, {"type": "text_delta", "text": "According to the document, "}),
        _stop(0),
        _start(1, {"type": "text", "text": ""}),
        _delta(1, {"type": "text_delta", "text": "the grass is green"}),
        _delta(1, {"type": "citations_delta", "citation": citation}),
        _stop(1),
        _message_delta("end_turn", 12),
        MESSAGE_STOP,
    )
    assert streamed_text(chunks) == "According to the document, the grass is green"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_a_second_tool_call_without_input_streams_an_empty_object_at_its_own_index() -> None:
    # A tool without parameters streams one empty input_json_delta, then its stop.
    chunks = await anthropic_stream(
        MESSAGE_START,
        _start(
            0,
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}},
        ),
        _delta(0, {"type": "input_json_delta", "partial_json": ""}),
        _delta(0, {"type": "input_json_delta", "partial_json": '{"location": "Paris"}'}),
        _stop(0),
        _start(1, {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}),
        _delta(1, {"type": "input_json_delta", "partial_json": ""}),
        _stop(1),
        _message_delta("tool_use", 30),
        MESSAGE_STOP,
    )
    calls: dict[int, list[str]] = {}
    for chunk in chunks:
        for piece in chunk.choices[0].delta.tool_calls:
            call = calls.setdefault(piece.index, ["", "", ""])
            call[0] += piece.id
            call[1] += piece.function.name
            call[2] += piece.function.arguments
    assert calls == {
        0: ["toolu_01", "get_weather", '{"location": "Paris"}'],
        1: ["toolu_02", "get_time", "{}"],
    }
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_server_tools_result_block_adds_nothing_to_the_stream() -> None:
    # The web search guide's stream: the results arrive whole on their block's start.
    result_start = orjson.loads(
        b'{"type": "content_block_start", "index": 2, "content_block": '
        b'{"type": "web_search_tool_result", "tool_use_id": "srvtoolu_xyz789", "content": '
        b'[{"type": "web_search_result", "title": "Quantum Computing Breakthroughs in 2025", '
        b'"url": "https://example.com"}]}}'
    )
    translator = StreamTranslator("anthropic-docs")
    translator.feed(MESSAGE_START)
    assert translator.feed(result_start) == []
    assert translator.feed(_stop(2)) == []


def test_a_server_tools_call_and_its_input_add_nothing_to_the_stream() -> None:
    # The web search guide's stream: Anthropic calls its own tool and streams its input;
    # that call is not one of the caller's tools.
    use_start = orjson.loads(
        b'{"type": "content_block_start", "index": 1, "content_block": {"type": '
        b'"server_tool_use", "id": "srvtoolu_xyz789", "name": "web_search", "input": {}}}'
    )
    input_delta = orjson.loads(
        b'{"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", '
        b'"partial_json": "{\\"query\\": \\"latest quantum computing breakthroughs\\"}"}}'
    )
    translator = StreamTranslator("anthropic-docs")
    translator.feed(MESSAGE_START)
    assert translator.feed(use_start) == []
    assert translator.feed(input_delta) == []
    assert translator.feed(_stop(1)) == []


@pytest.mark.parametrize("kind", ["annotation", "ping", "usage_report"])
async def test_event_types_the_docs_do_not_list_are_ignored(kind: str) -> None:
    # The streaming guide: new event types may be added, and clients should ignore them,
    # wherever their names sort among the known ones.
    chunks = await anthropic_stream(
        MESSAGE_START,
        _start(0, {"type": "text", "text": ""}),
        {"type": kind},
        _delta(0, {"type": "text_delta", "text": "Hello!"}),
        _stop(0),
        _message_delta("end_turn", 15),
        MESSAGE_STOP,
    )
    assert streamed_text(chunks) == "Hello!"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_an_error_event_of_a_type_the_table_does_not_list_is_a_server_error() -> None:
    event = {"type": "error", "error": {"type": "unexpected_error", "message": "Something broke"}}
    with pytest.raises(UpstreamUnavailable) as caught:
        await anthropic_stream(MESSAGE_START, event)
    assert "answered HTTP 500" in caught.value.message
    assert "Something broke" in caught.value.message

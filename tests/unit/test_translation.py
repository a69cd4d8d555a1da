"""The translation pieces every adapter shares: schemas and arguments as JSON, the tool
choice, shape failures, usage, and folding the chunks of one network read together."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2

from ai_service.errors import UpstreamUnavailable
from ai_service.providers.translation import (
    ANTHROPIC_ERROR_STATUS,
    EMPTY_OBJECT_SCHEMA,
    TextRuns,
    arguments_object,
    arguments_text,
    carries_output,
    coalesce,
    finish_chunk,
    function_parameters,
    hide_reasoning_text,
    is_empty,
    keeps_reasoning_text,
    set_usage,
    text_chunk,
    text_length,
    text_only,
    tool_choice_of,
    translate_failure,
)
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    FunctionDefinition,
    ReasoningBlock,
    ReasoningConfig,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_a_function_s_schema_however_it_was_given() -> None:
    as_json = FunctionDefinition(name="f", parameters_json='{"type": "object", "properties": {}}')
    assert function_parameters(as_json) == EMPTY_OBJECT_SCHEMA
    struct = struct_pb2.Struct()
    struct.update(SCHEMA)
    assert function_parameters(FunctionDefinition(name="f", parameters_struct=struct)) == SCHEMA
    assert function_parameters(FunctionDefinition(name="f")) is None
    assert EMPTY_OBJECT_SCHEMA == {"type": "object", "properties": {}}


def test_a_tool_call_s_arguments_as_a_value_and_back() -> None:
    call = ToolCall(id="c")
    call.function.arguments = '{"city": "Paris"}'
    assert arguments_object(call) == {"city": "Paris"}
    assert arguments_object(ToolCall(id="c")) == {}  # no arguments: an empty object
    assert arguments_text({"city": "Paris", "days": 2}) == '{"city":"Paris","days":2}'
    assert arguments_text(None) == "{}"
    assert arguments_text([]) == "[]"


def test_each_anthropic_error_type_comes_with_the_status_anthropic_documents() -> None:
    assert ANTHROPIC_ERROR_STATUS == {
        "invalid_request_error": 400,
        "authentication_error": 401,
        "billing_error": 402,
        "permission_error": 403,
        "not_found_error": 404,
        "request_too_large": 413,
        "rate_limit_error": 429,
        "api_error": 500,
        "timeout_error": 504,
        "overloaded_error": 529,
    }


def request_with(tools: bool, choice: ToolChoice | None) -> ChatCompletionRequest:
    request = ChatCompletionRequest(model="m")
    if tools:
        request.tools.append(Tool(type="function", function=FunctionDefinition(name="f")))
    if choice is not None:
        request.tool_choice.CopyFrom(choice)
    return request


def test_the_tool_choice_only_with_tools_and_only_when_one_was_made() -> None:
    assert tool_choice_of(request_with(True, ToolChoice(mode="required"))) == ("mode", "required")
    assert tool_choice_of(request_with(True, ToolChoice(function="f"))) == ("function", "f")
    assert tool_choice_of(request_with(False, ToolChoice(mode="auto"))) is None
    assert tool_choice_of(request_with(True, None)) is None
    assert tool_choice_of(request_with(True, ToolChoice())) is None  # set, but empty


def test_the_reasoning_text_is_kept_unless_the_caller_said_not_to() -> None:
    assert keeps_reasoning_text(ChatCompletionRequest())
    assert keeps_reasoning_text(ChatCompletionRequest(reasoning=ReasoningConfig(effort="low")))
    kept = ChatCompletionRequest(reasoning=ReasoningConfig(effort="low", include_text=True))
    assert keeps_reasoning_text(kept)
    hidden = ChatCompletionRequest(reasoning=ReasoningConfig(effort="low", include_text=False))
    assert not keeps_reasoning_text(hidden)


def test_hidden_reasoning_keeps_what_the_next_turn_needs_and_drops_text_alone() -> None:
    response = ChatCompletionResponse(id="r1")
    for index in range(2):
        message = response.choices.add(index=index).message
        message.content = "Paris."
        message.reasoning.extend(
            [
                ReasoningBlock(text="The capital...", signature="sig"),
                ReasoningBlock(text="so Paris"),  # text alone: nothing to send back
                ReasoningBlock(redacted_data="opaque"),
            ]
        )
    hide_reasoning_text(response)
    for choice in response.choices:  # every choice, not only the first
        assert list(choice.message.reasoning) == [
            ReasoningBlock(signature="sig"),
            ReasoningBlock(redacted_data="opaque"),
        ]
        assert choice.message.content == "Paris."


def test_hidden_reasoning_keeps_every_signed_block_and_none_of_text_alone() -> None:
    response = ChatCompletionResponse(id="r1")
    signed = response.choices.add(index=0).message.reasoning
    signed.extend([ReasoningBlock(text="a", signature="s1"), ReasoningBlock(signature="s2")])
    bare = response.choices.add(index=1).message.reasoning
    bare.extend([ReasoningBlock(text="a"), ReasoningBlock(text="b")])
    hide_reasoning_text(response)
    assert list(signed) == [ReasoningBlock(signature="s1"), ReasoningBlock(signature="s2")]
    assert list(bare) == []


@pytest.mark.parametrize("error", [KeyError, TypeError, ValueError, AttributeError, IndexError])
def test_a_body_of_the_wrong_shape_is_the_upstream_s_failure(error: type[Exception]) -> None:
    def translate(payload: dict[str, object], *args: object) -> None:
        raise error("no 'choices'")

    with pytest.raises(UpstreamUnavailable) as failed:
        translate_failure(translate, {})
    assert failed.value.message.startswith(f"upstream sent an unexpected body ({error.__name__}: ")


def test_a_translation_that_works_gets_the_payload_and_its_arguments() -> None:
    assert translate_failure(lambda payload, a, b: (payload, a, b), {"x": 1}, 2, 3) == (
        {"x": 1},
        2,
        3,
    )
    with pytest.raises(RuntimeError):  # not a shape failure: not the upstream's
        translate_failure(lambda payload: (_ for _ in ()).throw(RuntimeError("bug")), {})


def test_usage_totals_its_parts() -> None:
    usage = Usage()
    set_usage(usage, 7, 5)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (7, 5, 12)


TEMPLATE = ChatCompletionChunk(id="c1", model="m", created=9)


def test_a_text_chunk_and_the_final_chunk_copy_the_template() -> None:
    chunk = text_chunk(TEMPLATE, "hi", role="assistant")
    assert (chunk.id, chunk.model, chunk.created) == ("c1", "m", 9)
    assert (chunk.choices[0].index, chunk.choices[0].delta.role) == (0, "assistant")
    assert chunk.choices[0].delta.content == "hi"
    last = finish_chunk(TEMPLATE, "stop", 3, 4)
    assert (last.id, last.choices[0].finish_reason, last.choices[0].delta.content) == (
        "c1",
        "stop",
        "",
    )
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        3,
        4,
        7,
    )


def chunk(content: str = "", index: int = 0, **fields: object) -> ChatCompletionChunk:
    piece = ChatCompletionChunk(id="c1")
    choice = piece.choices.add(index=index)
    choice.delta.content = content
    for name, value in fields.items():
        if name == "finish_reason":
            choice.finish_reason = str(value)
        elif name == "role":
            choice.delta.role = str(value)
        elif name == "reasoning":
            choice.delta.reasoning.add(text=str(value))
        elif name == "tool":
            call = choice.delta.tool_calls.add()
            call.CopyFrom(value)  # type: ignore[arg-type]
        elif name == "usage":
            piece.usage.CopyFrom(value)  # type: ignore[arg-type]
    return piece


def call_piece(arguments: str, index: int = 0, id: str = "", name: str = "") -> ToolCallDelta:
    piece = ToolCallDelta(id=id, index=index)
    piece.function.name, piece.function.arguments = name, arguments
    return piece


@pytest.mark.parametrize(
    ("piece", "empty"),
    [
        (ChatCompletionChunk(), True),
        (chunk(), True),
        (chunk("x"), False),
        (chunk(role="assistant"), False),
        (chunk(finish_reason="stop"), False),
        (chunk(reasoning="r"), False),
        (chunk(tool=call_piece("{")), False),
        (chunk(usage=Usage(prompt_tokens=1)), False),
    ],
)
def test_an_empty_chunk_adds_nothing(piece: ChatCompletionChunk, empty: bool) -> None:
    assert is_empty(piece) is empty


@pytest.mark.parametrize(
    ("piece", "carries"),
    [
        (chunk("x"), True),
        (chunk(tool=call_piece("{")), True),
        (chunk(reasoning="r"), True),
        (chunk(role="assistant"), False),
        (chunk(finish_reason="stop"), False),
        (chunk(usage=Usage(prompt_tokens=1)), False),
        (chunk(), False),
        (ChatCompletionChunk(), False),
    ],
)
def test_output_is_text_a_tool_call_or_reasoning(piece: ChatCompletionChunk, carries: bool) -> None:
    assert carries_output(piece) is carries


def test_output_in_any_choice_is_output() -> None:
    two = chunk(role="assistant")
    two.choices.add(index=1).delta.content = "x"
    assert carries_output(two)


def test_the_text_a_chunk_adds_over_its_choices() -> None:
    two = chunk("abc")
    two.choices.add(index=1).delta.content = "de"
    assert text_length(two) == 5
    assert text_length(ChatCompletionChunk()) == 0


@pytest.mark.parametrize(
    ("piece", "plain"),
    [
        (chunk("hi", index=2), (2, "hi")),
        (chunk(""), (0, "")),
        (chunk("hi", role="assistant"), None),
        (chunk("hi", finish_reason="stop"), None),
        (chunk("hi", reasoning="r"), None),
        (chunk("hi", tool=call_piece("{")), None),
        (chunk("hi", usage=Usage(prompt_tokens=1)), None),
        (ChatCompletionChunk(), None),
    ],
)
def test_text_only_is_a_chunk_that_only_adds_text_to_one_choice(
    piece: ChatCompletionChunk, plain: tuple[int, str] | None
) -> None:
    assert text_only(piece) == plain


def test_a_chunk_with_two_choices_is_not_text_only() -> None:
    two = chunk("a")
    two.choices.add(index=1).delta.content = "b"
    assert text_only(two) is None


def contents(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [c.choices[0].delta.content if c.choices else "<usage>" for c in chunks]


def test_text_that_arrived_together_leaves_as_one_chunk() -> None:
    folded = coalesce([chunk("He", role="assistant"), chunk("l"), chunk("lo"), chunk("!")])
    assert contents(folded) == ["Hello!"]
    assert folded[0].choices[0].delta.role == "assistant"


def test_text_folds_only_into_text_of_the_same_choice() -> None:
    folded = coalesce([chunk("a"), chunk("b", index=1), chunk("c", index=1), chunk("d")])
    assert [(c.choices[0].index, c.choices[0].delta.content) for c in folded] == [
        (0, "a"),
        (1, "bc"),
        (0, "d"),
    ]


def test_what_is_not_text_ends_a_run() -> None:
    last = chunk("", finish_reason="stop")
    usage = ChatCompletionChunk(usage=Usage(prompt_tokens=1))
    folded = coalesce([chunk("a"), chunk("b"), last, chunk("c"), usage, chunk("d")])
    assert contents(folded) == ["ab", "", "c", "<usage>", "d"]
    thought = coalesce([chunk(reasoning="thinking"), chunk("after"), chunk("more")])
    assert len(thought) == 2 and contents(thought) == ["", "aftermore"]  # text after reasoning
    two = chunk("x")
    two.choices.add(index=1)
    assert len(coalesce([two, chunk("y")])) == 2


def test_the_pieces_of_one_tool_call_s_arguments_are_joined() -> None:
    start = chunk(tool=call_piece("", id="call_1", name="get"))
    folded = coalesce(
        [start, chunk(tool=call_piece('{"ci')), chunk(tool=call_piece('ty": 1}')), chunk("x")]
    )
    assert len(folded) == 2
    (call,) = folded[0].choices[0].delta.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1",
        "get",
        '{"city": 1}',
    )


@pytest.mark.parametrize(
    "second",
    [
        chunk(tool=call_piece("{}", index=1)),  # another call
        chunk(tool=call_piece("{}", id="call_2")),  # a new call begins
        chunk(tool=call_piece("{}", name="other")),
        chunk(tool=call_piece("{}"), finish_reason="tool_calls"),
        chunk(tool=call_piece("{}"), role="assistant"),
        chunk("text", tool=call_piece("{}")),
        chunk(tool=call_piece("{}"), reasoning="r"),
        chunk(tool=call_piece("{}"), usage=Usage(prompt_tokens=1)),
        chunk(tool=call_piece("{}"), index=1),  # another choice
        chunk(),  # an empty delta: no call to continue
    ],
)
def test_what_is_not_the_same_call_s_arguments_is_not_joined(
    second: ChatCompletionChunk,
) -> None:
    first = chunk(tool=call_piece("", id="call_1", name="get"))
    assert len(coalesce([first, second])) == 2


@pytest.mark.parametrize(
    "first",
    [
        chunk("text", tool=call_piece("", id="call_1", name="get")),
        chunk(tool=call_piece("", id="call_1", name="get"), finish_reason="tool_calls"),
        chunk(tool=call_piece("", id="call_1", name="get"), index=1),  # another choice
        chunk(tool=call_piece("", index=1, id="call_1", name="get")),  # another call
    ],
)
def test_arguments_do_not_join_a_piece_that_carries_more(first: ChatCompletionChunk) -> None:
    assert len(coalesce([first, chunk(tool=call_piece("{}"))])) == 2


def test_a_piece_with_two_calls_takes_no_arguments() -> None:
    first = chunk(tool=call_piece("", id="call_1", name="a"))
    first.choices[0].delta.tool_calls.append(call_piece("", index=1, id="call_2", name="b"))
    assert len(coalesce([first, chunk(tool=call_piece("{}"))])) == 2
    double = chunk(tool=call_piece("{"))
    double.choices[0].delta.tool_calls.append(call_piece("}", index=1))
    assert len(coalesce([chunk(tool=call_piece("", id="c", name="a")), double])) == 2


def test_arguments_join_no_piece_of_two_choices() -> None:
    first = chunk(tool=call_piece("", id="call_1", name="get"))
    first.choices.add(index=1).delta.content = "other"
    assert len(coalesce([first, chunk(tool=call_piece("{}"))])) == 2
    second = chunk(tool=call_piece("{}"))
    second.choices.add(index=1).delta.content = "other"
    folded = coalesce([chunk(tool=call_piece("", id="call_1", name="get")), second])
    assert len(folded) == 2
    assert folded[1].choices[1].delta.content == "other"  # nothing of it is lost


def test_arguments_join_their_call_after_the_text_of_the_same_read() -> None:
    folded = coalesce(
        [
            chunk("Let me look.", role="assistant"),
            chunk(tool=call_piece("", id="call_1", name="get")),
            chunk(tool=call_piece('{"ci')),
            chunk(tool=call_piece('ty": 1}')),
        ]
    )
    assert len(folded) == 2
    (call,) = folded[1].choices[0].delta.tool_calls
    assert (call.id, call.function.arguments) == ("call_1", '{"city": 1}')


def test_a_chunk_with_no_choices_and_no_usage_passes_between_runs() -> None:
    bare = ChatCompletionChunk(id="c1")
    folded = coalesce([chunk("a"), bare, chunk("b"), chunk("c")])
    assert [len(c.choices) for c in folded] == [1, 0, 1]
    assert (folded[0].choices[0].delta.content, folded[2].choices[0].delta.content) == ("a", "bc")
    start = chunk(tool=call_piece("", id="call_1", name="get"))
    assert len(coalesce([start, ChatCompletionChunk(id="c1")])) == 2


def test_text_and_arguments_fold_by_the_value_of_large_indices() -> None:
    # Indices past 256 are new int objects each time they are read from a message.
    text = coalesce([chunk("a", index=300), chunk("b", index=300)])
    assert [(c.choices[0].index, c.choices[0].delta.content) for c in text] == [(300, "ab")]
    start = chunk(tool=call_piece("", id="call_1", name="get"), index=300)
    assert len(coalesce([start, chunk(tool=call_piece("{}"), index=300)])) == 1
    start = chunk(tool=call_piece("", index=300, id="call_1", name="get"))
    assert len(coalesce([start, chunk(tool=call_piece("{}", index=300))])) == 1


def test_the_last_chunk_is_the_one_added_last() -> None:
    runs = TextRuns()
    runs.add(chunk("a"))
    runs.add(chunk("", finish_reason="stop"))
    last = runs.last()
    assert last is not None and last.choices[0].finish_reason == "stop"


def test_text_runs_take_text_without_a_chunk_and_start_afresh_when_taken() -> None:
    runs = TextRuns()
    assert not runs.extend_text(0, "lost")  # nothing to fold into yet
    assert runs.last() is None
    runs.add_text(chunk("He"), 0)
    assert runs.extend_text(0, "llo")
    assert not runs.extend_text(1, "other choice")
    last = runs.last()
    assert last is not None and last.choices[0].delta.content == "Hello"
    assert runs.extend_text(0, "!")
    assert contents(runs.take()) == ["Hello!"]
    assert runs.take() == []
    assert not runs.extend_text(0, "after take")


def test_text_runs_fold_a_run_before_a_new_text_chunk() -> None:
    runs = TextRuns()
    runs.add_text(chunk("a"), 0)
    runs.extend_text(0, "b")
    runs.add_text(chunk("c", index=1), 1)
    runs.extend_text(1, "d")
    assert contents(runs.take()) == ["ab", "cd"]

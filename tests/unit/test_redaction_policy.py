"""The redaction policy applied to a call: which mode, what it does to the prompt, to the
answer and to the audit log's copies, and how a streamed answer is held back and released.
"""

from __future__ import annotations

from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import struct_pb2

from ai_service.calls.record import CallRecord
from ai_service.config import RedactionMode, RedactionSettings
from ai_service.policy.detectors import BUILTIN
from ai_service.policy.redaction import (
    RedactionPolicy,
    SensitiveDataBlocked,
    StreamRedactor,
)
from ai_service.policy.scanner import Redactor
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    FunctionDefinition,
    Message,
    ReasoningBlock,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)

EMAIL = "jane.doe@example.com"
OTHER = "john.roe@example.org"
REDACTED = "[REDACTED:EMAIL]"


def built(text: str) -> str:
    """`text` as a new string object, as text from the wire or a config file is: never the
    literal the code compares it with."""
    return "".join(list(text))


def policy(keep_text: bool = False, **settings: Any) -> RedactionPolicy:
    return RedactionPolicy(RedactionSettings.model_validate(settings), keep_text=keep_text)


def call() -> CallRecord:
    return CallRecord((), "id", "ChatCompletion", streaming=False)


def ask(*messages: Message, **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=messages, **fields)


def user(text: str) -> Message:
    return Message(role="user", content=text)


# -- which mode ----------------------------------------------------------------------------


def test_a_key_s_mode_wins_over_its_model_s_which_wins_over_the_default() -> None:
    chosen = policy(mode="log-only", models={"m": "block"}, keys={"k": "redact"})
    assert chosen.mode_for("k", "m") == "redact"
    assert chosen.mode_for("k", "other") == "redact"
    assert chosen.mode_for("someone", "m") == "block"
    assert chosen.mode_for("someone", "other") == "log-only"


@pytest.mark.parametrize(
    ("models", "strictest"),
    [
        (["off"], "off"),
        (["off", "log-only"], "log-only"),
        (["log-only", "redact", "off"], "redact"),
        (["redact", "block", "log-only"], "block"),
    ],
)
def test_a_call_that_may_reach_several_models_gets_the_strictest_mode(
    models: list[str], strictest: RedactionMode
) -> None:
    chosen = policy(models={model: model for model in models})
    assert chosen.strictest_mode("k", models) == strictest
    assert (
        policy(models={m: m for m in models}, keys={"k": "off"}).strictest_mode("k", models)
        == "off"
    )  # the key's own mode is every model's


def test_calls_without_a_screen_or_an_audit_copy_share_one_screening() -> None:
    off = policy()
    assert off.screening("k", ["m"], call()) is off.screening("j", ["n"], call())
    kept = policy(keep_text=True)
    assert kept.screening("k", ["m"], call()) is not kept.screening("k", ["m"], call())
    screened = policy(mode="log-only")
    assert screened.screening("k", ["m"], call()) is not screened.screening("k", ["m"], call())


# -- the prompt ----------------------------------------------------------------------------


async def test_redact_mode_rewrites_every_text_the_upstream_gets() -> None:
    record = call()
    screening = policy(mode=built("redact")).screening("k", ["m"], record)
    arguments = orjson.dumps({"to": EMAIL, "n": 1}).decode()
    request = ask(
        user(f"mail {EMAIL}"),
        Message(
            role="assistant",
            tool_calls=[ToolCall(id="c", function={"name": "send", "arguments": arguments})],
        ),
        Message(role="tool", tool_call_id="c", content="sent"),
        user("thanks"),
        tools=[
            Tool(
                type="function",
                function=FunctionDefinition(
                    name="send",
                    description=f"write to {EMAIL}",
                    parameters_json=orjson.dumps({"default": OTHER}).decode(),
                ),
            )
        ],
        stop=["plain", f"stop at {EMAIL}"],
        user=EMAIL,
        response_format=ResponseFormat(
            type="json_schema", json_schema=orjson.dumps({"const": EMAIL}).decode()
        ),
    )
    await screening.prompt(request)
    assert request.messages[0].content == f"mail {REDACTED}"
    assert request.messages[2].content == "sent" and request.messages[3].content == "thanks"
    # A JSON text is rewritten as JSON, value by value.
    assert orjson.loads(request.messages[1].tool_calls[0].function.arguments) == {
        "to": REDACTED,
        "n": 1,
    }
    function = request.tools[0].function
    assert function.description == f"write to {REDACTED}"
    assert orjson.loads(function.parameters_json) == {"default": REDACTED}
    assert list(request.stop) == ["plain", f"stop at {REDACTED}"]
    assert request.user == REDACTED
    assert orjson.loads(request.response_format.json_schema) == {"const": REDACTED}
    assert record.pii == {"EMAIL"}


async def test_an_identifier_is_redacted_in_a_form_identifiers_allow() -> None:
    screening = policy(mode="redact").screening("k", ["m"], None)
    request = ask(
        user("call it"),
        tools=[Tool(type="function", function=FunctionDefinition(name="f", description="x"))],
        tool_choice=ToolChoice(function=EMAIL),
    )
    request.messages[0].name = f"from {EMAIL}"
    await screening.prompt(request)
    assert request.tool_choice.function == "REDACTED_EMAIL"
    assert request.messages[0].name == "from REDACTED_EMAIL"


async def test_an_escaped_address_inside_json_is_still_an_address() -> None:
    screening = policy(mode="redact").screening("k", ["m"], None)
    escaped = '{"to": "jane.doe\\u0040example.com"}'
    request = ask(
        Message(
            role="assistant",
            tool_calls=[ToolCall(id="c", function={"name": "send", "arguments": escaped})],
        ),
        Message(role="tool", tool_call_id="c", content="ok"),
    )
    await screening.prompt(request)
    assert orjson.loads(request.messages[0].tool_calls[0].function.arguments) == {"to": REDACTED}


async def test_a_schema_given_as_a_struct_is_redacted_as_one() -> None:
    screening = policy(mode="redact").screening("k", ["m"], None)
    struct = struct_pb2.Struct()
    struct.update({"description": f"mail {EMAIL}", "type": "object"})
    request = ask(
        user("hi"),
        tools=[
            Tool(type="function", function=FunctionDefinition(name="f", parameters_struct=struct))
        ],
    )
    await screening.prompt(request)
    parameters = dict(request.tools[0].function.parameters_struct)
    assert parameters == {"description": f"mail {REDACTED}", "type": "object"}


async def test_signed_reasoning_is_screened_not_rewritten_and_what_follows_still_is() -> None:
    record = call()
    screening = policy(mode="redact").screening("k", ["m"], record)
    request = ask(
        user("hello"),
        Message(
            role="assistant",
            content="sure",
            reasoning=[ReasoningBlock(text=f"they use {EMAIL}", signature="sig")],
        ),
        user(f"and {OTHER}"),
    )
    await screening.prompt(request)
    assert request.messages[1].reasoning[0].text == f"they use {EMAIL}"
    assert request.messages[2].content == f"and {REDACTED}"
    assert record.pii == {"EMAIL"}


async def test_block_mode_refuses_naming_the_kinds_and_still_records_them() -> None:
    record = call()
    screening = policy(mode=built("block")).screening("k", ["m"], record)
    with pytest.raises(SensitiveDataBlocked) as refused:
        await screening.prompt(ask(user(f"{EMAIL} and 4111 1111 1111 1111")))
    error = refused.value
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert error.metadata == {"kinds": "CREDIT_CARD,EMAIL"}
    assert error.message == (
        "the request contains sensitive data (CREDIT_CARD,EMAIL), which this model or key "
        "may not send; remove it and retry"
    )
    assert record.pii == {"CREDIT_CARD", "EMAIL"}


async def test_block_mode_lets_a_clean_prompt_through_untouched() -> None:
    request = ask(user("nothing to see"))
    await policy(mode="block").screening("k", ["m"], call()).prompt(request)
    assert request.messages[0].content == "nothing to see"


@pytest.mark.parametrize("mode", ["log-only", "off"])
async def test_log_only_and_off_leave_the_prompt_as_it_was(mode: RedactionMode) -> None:
    record = call()
    request = ask(user(f"mail {EMAIL}"))
    await policy(mode=built(mode), keep_text=True).screening("k", ["m"], record).prompt(request)
    assert request.messages[0].content == f"mail {EMAIL}"
    assert record.pii == ({"EMAIL"} if mode == "log-only" else set())


@pytest.mark.parametrize("mode", ["log-only", "off", "redact"])
async def test_the_audit_copy_of_the_prompt_is_always_redacted(mode: RedactionMode) -> None:
    record = call()
    screening = policy(mode=built(mode), keep_text=True).screening("k", ["m"], record)
    await screening.prompt(ask(Message(role="system", content="be brief"), user(f"mail {EMAIL}")))
    assert record.prompt == f"system: be brief\nuser: mail {REDACTED}"


async def test_no_audit_copy_unless_the_audit_keeps_text() -> None:
    record = call()
    await policy(mode="log-only").screening("k", ["m"], record).prompt(ask(user(EMAIL)))
    assert record.prompt is None
    await (
        policy(mode="log-only", keep_text=True).screening("k", ["m"], None).prompt(ask(user(EMAIL)))
    )  # no call to keep it in: nothing to do, no failure


# -- the answer ----------------------------------------------------------------------------


def answer(*texts: str) -> ChatCompletionResponse:
    response = ChatCompletionResponse()
    for i, text in enumerate(texts):
        response.choices.add(index=i).message.content = text
    return response


async def test_answers_are_redacted_only_when_asked_and_only_in_redact_or_block_mode() -> None:
    for mode, answers, redacted in [
        ("redact", True, True),
        ("block", True, True),
        ("log-only", True, False),
        ("redact", False, False),
    ]:
        record = call()
        screening = policy(mode=mode, answers=answers).screening("k", ["m"], record)
        response = answer("nothing here", f"mail {EMAIL}")
        await screening.answer(response)
        assert response.choices[1].message.content == (
            f"mail {REDACTED}" if redacted else f"mail {EMAIL}"
        ), (mode, answers)
        assert response.choices[0].message.content == "nothing here"
        assert record.pii == ({"EMAIL"} if redacted else set())


async def test_signed_reasoning_in_an_answer_is_noted_not_rewritten() -> None:
    record = call()
    screening = policy(mode="redact", answers=True).screening("k", ["m"], record)
    response = answer("ok")
    response.choices[0].message.reasoning.add(text=f"thinking of {EMAIL}", signature="sig")
    await screening.answer(response)
    assert response.choices[0].message.reasoning[0].text == f"thinking of {EMAIL}"
    assert record.pii == {"EMAIL"}


async def test_the_audit_copy_of_an_answer_is_redacted_whatever_the_mode() -> None:
    record = call()
    screening = policy(mode="off", keep_text=True).screening("k", ["m"], record)
    response = answer(f"mail {EMAIL}", " and more")
    await screening.answer(response)
    assert response.choices[0].message.content == f"mail {EMAIL}"  # off: the caller gets it
    assert record.answer == f"mail {REDACTED} and more"


def streamed(text: str, finish: str = "") -> ChatCompletionChunk:
    piece = ChatCompletionChunk()
    piece.choices.add(index=0, finish_reason=finish).delta.content = text
    return piece


async def test_a_streamed_answer_is_redacted_and_its_kinds_and_copy_recorded_at_the_end() -> None:
    record = call()
    screening = policy(mode="redact", answers=True, keep_text=True).screening("k", ["m"], record)
    out = []
    for text, finish in [("mail jane.d", ""), ("oe@example.com", ""), (" soon", "stop")]:
        piece = streamed(text, finish)
        await screening.chunk(piece)
        out.append(piece.choices[0].delta.content)
    assert "".join(out) == f"mail {REDACTED} soon"
    await screening.stream_ended()
    assert record.pii == {"EMAIL"}
    assert record.answer == f"mail {REDACTED} soon"


async def test_a_stream_not_redacted_keeps_its_copy_only() -> None:
    record = call()
    screening = policy(mode="log-only", answers=True, keep_text=True).screening("k", ["m"], record)
    piece = streamed(f"mail {EMAIL}", "stop")
    await screening.chunk(piece)
    assert piece.choices[0].delta.content == f"mail {EMAIL}"
    await screening.stream_ended()
    assert record.answer == f"mail {REDACTED}"
    assert record.pii == set()


async def test_without_a_call_nothing_is_recorded_and_nothing_fails() -> None:
    screening = policy(mode="redact", answers=True, keep_text=True).screening("k", ["m"], None)
    piece = streamed(f"mail {EMAIL}", "stop")
    await screening.chunk(piece)
    await screening.stream_ended()
    await screening.answer(answer(EMAIL))
    assert piece.choices[0].delta.content == f"mail {REDACTED}"


# -- a streamed answer, held back and released ---------------------------------------------

EMAILS = Redactor([BUILTIN["email"]])


async def released(stream: StreamRedactor, pieces: list[str], finish: bool = True) -> list[str]:
    out = []
    for i, text in enumerate(pieces):
        piece = streamed(text, "stop" if finish and i == len(pieces) - 1 else "")
        await stream.apply(piece)
        out.append(piece.choices[0].delta.content)
    return out


TEXTS = [
    f"write to {EMAIL} today, or to {OTHER} tomorrow; nobody else.",
    f"{EMAIL}{OTHER}",
    "no address at all, only words of various lengths " * 6,
    f"a long run: {'x' * 90}@example.com then {EMAIL}",
]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("size", [1, 3, 7, 25, 1000])
async def test_a_stream_redacted_in_pieces_is_the_whole_text_redacted(text: str, size: int) -> None:
    pieces = [text[i : i + size] for i in range(0, len(text), size)] + [""]
    out = await released(StreamRedactor(EMAILS, window=16), pieces)
    assert "".join(out) == EMAILS.redact(text)


async def test_held_text_is_released_as_the_stream_goes_not_only_at_its_end() -> None:
    words = "plain words here and more words there " * 20  # no address: nothing to hold for
    pieces = [words[i : i + 10] for i in range(0, len(words), 10)]
    stream = StreamRedactor(EMAILS, window=16)
    out = await released(stream, pieces, finish=False)
    sent = "".join(out)
    assert words.startswith(sent)
    # Held: under a window and the word being written, twice over (rescans wait until
    # the held text doubles), and one read.
    assert len(words) - len(sent) <= 2 * (16 + len("there ")) + 10


async def test_a_single_word_is_held_whole_however_long_it_grows() -> None:
    # It may turn out to be an address: none of it is released until it ends.
    out = await released(
        StreamRedactor(EMAILS, window=4), ["abcdefghijklmnop", "qrstuvwxyz"], finish=False
    )
    assert out == ["", ""]
    out = await released(
        StreamRedactor(EMAILS, window=4), ["first word ", "abcdefghijklmnop"], finish=False
    )
    assert "".join(out) == "first word "


async def test_an_address_that_straddles_the_release_point_is_held_back_whole() -> None:
    stream = StreamRedactor(EMAILS, window=4)
    out = await released(stream, [f"to {EMAIL} and then more words"], finish=False)
    assert out == [f"to {REDACTED} and then more "]
    stream = StreamRedactor(EMAILS, window=12)
    out = await released(stream, [f"to {EMAIL} then"], finish=False)
    assert out == ["to "]  # the address ends within the window: held with it


async def test_each_choice_is_held_and_released_on_its_own() -> None:
    stream = StreamRedactor(EMAILS, window=8)
    first = ChatCompletionChunk()
    first.choices.add(index=0).delta.content = "jane"
    first.choices.add(index=1, finish_reason="stop").delta.content = f"mail {OTHER}"
    await stream.apply(first)
    assert [c.delta.content for c in first.choices] == ["", f"mail {REDACTED}"]
    second = ChatCompletionChunk()
    second.choices.add(index=0, finish_reason="stop").delta.content = ".doe@example.com"
    await stream.apply(second)
    assert second.choices[0].delta.content == REDACTED
    assert stream.found == {"EMAIL"}


async def test_reasoning_pieces_are_screened_as_they_come() -> None:
    stream = StreamRedactor(EMAILS, window=8)
    piece = streamed("ok")
    piece.choices[0].delta.reasoning.add(text=f"thinking of {EMAIL}")
    await stream.apply(piece)
    assert stream.found == {"EMAIL"}
    assert piece.choices[0].delta.reasoning[0].text == f"thinking of {EMAIL}"


async def test_an_address_ending_exactly_at_the_release_point_is_released() -> None:
    stream = StreamRedactor(EMAILS, window=5)
    out = await released(stream, [f"to {EMAIL}     "], finish=False)
    assert out == [f"to {REDACTED}"]


async def test_an_address_inside_the_window_does_not_move_the_release_point() -> None:
    text = f"one two three four five six seven {EMAIL} x"
    out = await released(StreamRedactor(EMAILS, window=30), [text], finish=False)
    assert out == [text[: len(text) - 30]]


async def test_a_choice_still_held_does_not_stop_the_next_choice() -> None:
    stream = StreamRedactor(EMAILS, window=8)
    first = ChatCompletionChunk()
    first.choices.add(index=0).delta.content = "jane"
    first.choices.add(index=1).delta.content = "x"
    await stream.apply(first)
    second = ChatCompletionChunk()
    second.choices.add(index=0).delta.content = "."  # still short of a rescan: held
    second.choices.add(index=1, finish_reason="stop").delta.content = f" {OTHER}"
    await stream.apply(second)
    assert second.choices[0].delta.content == ""
    assert second.choices[1].delta.content == f"x {REDACTED}"


async def test_held_text_is_scanned_again_once_it_reaches_its_due_length() -> None:
    stream = StreamRedactor(EMAILS, window=8)
    # 15 characters: all but a window released, 8 held; scanned again at 8 + 8.
    out = await released(stream, ["aaaa bbbb cccc ", "dddd eee"], finish=False)
    assert out == ["aaaa bb", "bb cccc "]


async def test_a_trailing_run_longer_than_any_address_is_not_held_for_being_one() -> None:
    text = "word " + "x" * 500  # no address is that long (at most 448 characters)
    out = await released(StreamRedactor(EMAILS, window=16), [text], finish=False)
    assert out == [text[:-16]]

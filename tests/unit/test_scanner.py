"""The scanner beyond the detector table: how a failed candidate is taken apart, how often a
long scan lets the event loop run, and the one lane long scans take turns in."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator

import pytest

from ai_service.config import CustomDetector, RedactionSettings
from ai_service.policy.redaction import redactor_for
from ai_service.policy.scanner import SCAN_SLICE, Finding
from tests.clock import ManualClock, in_virtual_time

REDACTOR = redactor_for(RedactionSettings())
#: Looks like a card (15 digits) but fails Luhn; as a whole it is a phone number.
PHONE_LIKE_CARD = "555-123-4567-8901"
#: Six slices' worth of text with nothing to find: a long scan.
LONG_PLAIN = "nothing here at all. " * (6 * SCAN_SLICE // 21)


def found(text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in REDACTOR.find(text)]


def test_a_failed_candidate_is_tried_again_from_where_it_starts() -> None:
    # Anywhere in the text, after whatever it follows.
    for before in ("", "id:", "a" * 300 + " id:"):
        assert found(f"{before}{PHONE_LIKE_CARD} x") == [("PHONE", PHONE_LIKE_CARD)]


def test_inside_a_failed_candidate_only_what_starts_a_word_is_tried() -> None:
    # 17 digits failing Luhn, holding a valid card from its second digit: not a word.
    assert found("order 94111111111111111 shipped") == []
    assert found("qty 3 4111 1111 1111 1111") == [("CREDIT_CARD", "4111 1111 1111 1111")]


def test_failed_candidates_are_taken_apart_64_times_a_text_at_most() -> None:
    # The scan stays linear whatever the text: the 65th is not tried again.
    assert len(REDACTOR.find(f"id:{PHONE_LIKE_CARD} " * 65)) == 64


def steps(scan: Generator[None, None, object]) -> int:
    """How many times a scan let the caller (the event loop) run before it ended."""
    count = 0
    while True:
        try:
            next(scan)
        except StopIteration:
            return count
        count += 1


def test_a_long_scan_yields_once_per_slice_it_looks_at() -> None:
    plain = "nothing to find here, " * (20 * SCAN_SLICE // 22)
    crowded = "write to a@b.co " * (20 * SCAN_SLICE // 16)
    for text in (plain, crowded):
        # A slice never looks at more than SCAN_SLICE characters, and the next one goes
        # back at most `reach` to catch what lies across the edge.
        yields = steps(REDACTOR.find_steps(text))
        assert (
            len(text) // SCAN_SLICE - 1 <= yields <= len(text) // (SCAN_SLICE - REDACTOR.reach) + 1
        )


class Turns:
    """Counts the event loop's turns: a task that goes round once per turn."""

    def __init__(self) -> None:
        self.count = 0
        self._task = asyncio.ensure_future(self._go_round())

    async def _go_round(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    def stop(self) -> None:
        self._task.cancel()


def test_a_short_scan_does_not_yield() -> None:
    assert steps(REDACTOR.find_steps("write to a@b.co")) == 0


def test_a_long_scan_lets_the_event_loop_serve_others_meanwhile() -> None:
    async def main(_: ManualClock) -> None:
        turns = Turns()
        await asyncio.sleep(0)
        before = turns.count
        text = "nothing to find here, " * (3 * SCAN_SLICE // 22) + "mail a@b.co"
        assert [f.kind for f in await REDACTOR.find_async(text)] == ["EMAIL"]
        assert turns.count > before
        many = ["short text " * 30] * (3 * SCAN_SLICE // 330) + ["mail a@b.co"]
        before = turns.count
        results = await REDACTOR.find_each(many)
        assert turns.count > before
        assert [f.kind for f in results[-1]] == ["EMAIL"] and not any(results[:-1])
        turns.stop()

    in_virtual_time(main)


def test_long_scans_take_turns_first_come_first_served() -> None:
    async def main(_: ManualClock) -> None:
        ended: list[str] = []

        async def scan(name: str, text: str) -> None:
            await REDACTOR.find_async(text)
            ended.append(name)

        shorter = "nothing here either. " * (2 * SCAN_SLICE // 21)
        await asyncio.gather(scan("first, longer", LONG_PLAIN), scan("second, shorter", shorter))
        assert ended == ["first, longer", "second, shorter"]
        ended.clear()
        await asyncio.gather(REDACTOR.find_each([LONG_PLAIN]), scan("short, in no queue", "a@b.co"))
        assert ended == ["short, in no queue"]

    in_virtual_time(main)


def test_many_short_texts_give_the_loop_a_turn_after_each_slice_s_worth() -> None:
    async def main(_: ManualClock) -> None:
        turns = Turns()
        await asyncio.sleep(0)
        half = "x" * (SCAN_SLICE // 2 - 1) + " "
        before = turns.count
        await REDACTOR.find_each([half] * 4)  # two slices' worth: a turn after each
        assert turns.count - before == 2
        turns.stop()

    in_virtual_time(main)


def test_inside_a_failed_candidate_a_number_s_later_groups_are_not_tried() -> None:
    # 20 digits in dash-joined groups: too many for a phone number, and its last three
    # groups (a valid phone number on their own) do not start a word.
    assert found("licence key 1234-5678-1234-5678-1234") == []


def test_after_a_failed_candidate_the_scan_goes_on_right_where_it_ended() -> None:
    # `12:30:45` looks like an IPv6 address but does not parse; the address right after
    # it is still found.
    assert found("meeting time 12:30:45 a@b.co") == [("EMAIL", "a@b.co")]


def test_an_entity_across_a_slice_s_edge_is_found_whole_whatever_the_reach() -> None:
    # Alone, the SSN detector reaches 11 + 8 characters back, IBANs 43 + 8: the first
    # slice ends at 4096, inside the entity, and the next one goes back far enough.
    ssn_only = redactor_for(RedactionSettings(detectors=("ssn",)))
    text = " " * 4090 + "123-45-6789 "
    assert ssn_only.find(text) == [Finding("US_SSN", 4090, 4101)]
    iban_only = redactor_for(RedactionSettings(detectors=("iban",)))
    iban = "MT84 MALT 0110 0001 2345 MTLC AST0 01S"  # 38 characters, 35 in the first slice
    text = " " * 4061 + iban + " "
    assert iban_only.find(text) == [Finding("IBAN", 4061, 4099)]


def test_a_long_scan_yields_exactly_once_per_slice_of_work() -> None:
    # The built-in detectors reach back 456 characters (an email's 448, and 8 of
    # lookahead), so the slices start every 4096 - 456 = 3640 characters; the last
    # slice ends the scan without yielding, unless its finding completes a slice's worth.
    assert SCAN_SLICE == 4096 and REDACTOR.reach == 456
    ssn = "123-45-6789"
    for text, yields in (
        (" " * 7736, 1),  # [0, 4096) then [3640, 7736)
        (" " * 7737, 2),
        (" " * 4084 + ssn, 0),  # a finding ending 4095 characters in
        (" " * 4085 + ssn, 1),  # ... and 4096 characters in: a slice's worth
        (" " * 7724 + ssn, 1),  # after a yield at 4096, 4095 characters from 3640
        (" " * 7725 + ssn, 2),  # ... and 4096 from 3640
    ):
        assert steps(REDACTOR.find_steps(text)) == yields, len(text)


def test_a_finding_at_the_last_place_a_slice_vouches_for_is_taken_in_that_slice() -> None:
    # 4096 - 456 = 3640: a match starting there is whole in the first slice; one
    # starting a character later might not be, and waits for the next slice.
    ssn = "123-45-6789"
    taken = " " * 3640 + ssn + " " * 1349
    assert REDACTOR.find(taken) == [Finding("US_SSN", 3640, 3651)]
    assert steps(REDACTOR.find_steps(taken)) == 0
    deferred = " " * 3641 + ssn + " " * 1348
    assert REDACTOR.find(deferred) == [Finding("US_SSN", 3641, 3652)]
    assert steps(REDACTOR.find_steps(deferred)) == 1


@pytest.mark.timeout(10)
def test_a_custom_pattern_that_may_match_nothing_does_not_stall_the_scan() -> None:
    # `\b\d*` also matches nothing at every word boundary (the config refuses a pattern
    # that matches the empty string itself, not one that does so only somewhere): the
    # scan moves on a character past such a match and reports only numbers.
    numbers = redactor_for(
        RedactionSettings(detectors=(), custom=[CustomDetector(name="ORDER", pattern=r"\b\d*")])
    )
    text = "x" * 300 + " 42 and 7"
    assert numbers.find(text) == [Finding("ORDER", 301, 303), Finding("ORDER", 308, 309)]
    assert numbers.redact("a 12 b", numbers.find("a 12 b")) == "a [REDACTED:ORDER] b"


def test_with_no_detectors_nothing_is_found() -> None:
    # Redaction with every detector turned off (an audit log keeping prompts still asks).
    nothing = redactor_for(RedactionSettings(detectors=(), mode="redact"))
    assert nothing.find("jane@example.com, 4111 1111 1111 1111") == []


def test_many_short_texts_count_on_from_zero_after_each_turn() -> None:
    async def main(_: ManualClock) -> None:
        turns = Turns()
        await asyncio.sleep(0)
        # Less than two slices' worth, whichever comes first: one turn.
        for texts in (["x" * 4095, "y" * 4096], ["x" * 4096, "y" * 4095]):
            before = turns.count
            await REDACTOR.find_each(texts)
            assert turns.count - before == 1
        turns.stop()

    in_virtual_time(main)


def test_scans_of_at_most_a_slice_s_worth_do_not_queue_behind_a_long_one() -> None:
    async def main(_: ManualClock) -> None:
        ended: list[str] = []

        async def scan(name: str, work: Awaitable[object]) -> None:
            await work
            ended.append(name)

        one_slice = "x" * SCAN_SLICE
        await asyncio.gather(
            scan("long", REDACTOR.find_async(LONG_PLAIN)),
            scan("a slice", REDACTOR.find_async(one_slice)),
            scan("short", REDACTOR.find_async("a@b.co")),
            scan("texts of a slice", REDACTOR.find_each([one_slice[:2048], one_slice[2048:]])),
            scan("short texts", REDACTOR.find_each(["a@b.co", "x"])),
        )
        assert ended == ["a slice", "short", "texts of a slice", "short texts", "long"]

    in_virtual_time(main)


def test_long_scans_wait_on_no_timer() -> None:
    async def main(clock: ManualClock) -> None:
        before = clock.now
        await REDACTOR.find_async(LONG_PLAIN)
        await REDACTOR.find_each([LONG_PLAIN, "a@b.co"])
        assert clock.now == before

    in_virtual_time(main)

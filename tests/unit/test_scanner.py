"""The scanner beyond the detector table: how a failed candidate is taken apart, how often a
long scan lets the event loop run, and the one lane long scans take turns in."""

from __future__ import annotations

import asyncio
from collections.abc import Generator

from ai_service.config import RedactionSettings
from ai_service.policy.redaction import redactor_for
from ai_service.policy.scanner import SCAN_SLICE
from tests.clock import ManualClock, in_virtual_time

REDACTOR = redactor_for(RedactionSettings())
#: Looks like a card (15 digits) but fails Luhn; as a whole it is a phone number.
PHONE_LIKE_CARD = "555-123-4567-8901"


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


def test_a_short_scan_does_not_yield() -> None:
    assert steps(REDACTOR.find_steps("write to a@b.co")) == 0


def test_a_long_scan_lets_the_event_loop_serve_others_meanwhile() -> None:
    async def main(_: ManualClock) -> None:
        turns = 0

        async def other() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        ticker = asyncio.ensure_future(other())
        await asyncio.sleep(0)
        before = turns
        text = "nothing to find here, " * (3 * SCAN_SLICE // 22) + "mail a@b.co"
        assert [f.kind for f in await REDACTOR.find_async(text)] == ["EMAIL"]
        assert turns > before
        many = ["short text " * 30] * (3 * SCAN_SLICE // 330) + ["mail a@b.co"]
        before = turns
        results = await REDACTOR.find_each(many)
        assert turns > before
        assert [f.kind for f in results[-1]] == ["EMAIL"] and not any(results[:-1])
        ticker.cancel()

    in_virtual_time(main)


def test_long_scans_take_turns_first_come_first_served() -> None:
    async def main(_: ManualClock) -> None:
        ended: list[str] = []

        async def scan(name: str, text: str) -> None:
            await REDACTOR.find_async(text)
            ended.append(name)

        longer = "nothing here at all. " * (6 * SCAN_SLICE // 21)
        shorter = "nothing here either. " * (2 * SCAN_SLICE // 21)
        await asyncio.gather(scan("first, longer", longer), scan("second, shorter", shorter))
        assert ended == ["first, longer", "second, shorter"]
        ended.clear()
        await asyncio.gather(REDACTOR.find_each([longer]), scan("short, in no queue", "a@b.co"))
        assert ended == ["short, in no queue"]

    in_virtual_time(main)


def test_many_short_texts_give_the_loop_a_turn_after_each_slice_s_worth() -> None:
    async def main(_: ManualClock) -> None:
        turns = 0

        async def other() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        ticker = asyncio.ensure_future(other())
        await asyncio.sleep(0)
        half = "x" * (SCAN_SLICE // 2 - 1) + " "
        before = turns
        await REDACTOR.find_each([half] * 4)  # two slices' worth: a turn after each
        assert turns - before == 2
        ticker.cancel()

    in_virtual_time(main)

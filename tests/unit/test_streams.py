"""Streams each key holds open at once, against its `max_concurrent_streams`."""

from __future__ import annotations

import contextlib

import grpc
import pytest

from ai_service.errors import TooManyStreams
from ai_service.identity.callers import Caller
from ai_service.policy.streams import OpenStreams


def caller(name: str, cap: int | None) -> Caller:
    return Caller(name, frozenset(), None, max_concurrent_streams=cap)


def test_a_key_holds_up_to_its_cap_and_the_next_is_refused_naming_it() -> None:
    streams, capped = OpenStreams(), caller("k", 2)
    with streams.hold(capped), streams.hold(capped):
        assert streams.held_by("k") == 2
        with pytest.raises(TooManyStreams) as refused:
            streams.hold(capped)
        assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.message == "key 'k' already holds 2 open streams, its limit"
        assert (refused.value.subject, refused.value.limit) == ("key:k", 2)
        assert streams.held_by("k") == 2  # the refused one is not counted
    assert streams.held_by("k") == 0


def test_a_stream_that_ends_frees_its_place_even_when_it_fails() -> None:
    streams, capped = OpenStreams(), caller("k", 1)
    with pytest.raises(ValueError), streams.hold(capped):
        raise ValueError("the stream broke")
    with streams.hold(capped):
        assert streams.held_by("k") == 1


def test_keys_are_counted_apart_and_a_key_without_a_cap_is_not_limited() -> None:
    streams = OpenStreams()
    with streams.hold(caller("a", 1)), streams.hold(caller("b", 1)):
        free = caller("free", None)
        holds = [streams.hold(free) for _ in range(50)]
        for held in holds:
            held.__enter__()
        assert (streams.held_by("a"), streams.held_by("b"), streams.held_by("free")) == (1, 1, 50)
        for held in holds:
            held.__exit__(None, None, None)
    assert streams.held_by("free") == 0


def test_a_cap_of_zero_refuses_every_stream() -> None:
    with pytest.raises(TooManyStreams):
        OpenStreams().hold(caller("k", 0))


def test_a_key_whose_streams_all_ended_is_forgotten() -> None:
    streams = OpenStreams()
    with streams.hold(caller("k", 3)):
        pass
    assert "k" not in streams._open  # no entry kept per key that ever streamed


def test_a_cap_lowered_below_the_streams_held_refuses_new_ones_until_enough_end() -> None:
    # A reload may lower a key's cap while it holds more streams than the new cap.
    streams = OpenStreams()
    before, after = caller("k", 3), caller("k", 1)
    with contextlib.ExitStack() as held:
        for _ in range(3):
            held.enter_context(streams.hold(before))
        with pytest.raises(TooManyStreams, match="already holds 1 open streams"):
            streams.hold(after)
    with streams.hold(after), pytest.raises(TooManyStreams):
        streams.hold(after)

"""An upstream request's JSON body: the bytes, and no more memory than they need (a
stream's body lives as long as the stream)."""

from __future__ import annotations

import tracemalloc

import orjson

from ai_service.providers.base import request_json

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "stream": True}


def test_the_body_is_the_json() -> None:
    assert orjson.loads(request_json(BODY)) == BODY


def test_a_held_body_takes_about_its_size() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        held = [request_json(BODY) for _ in range(100)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    per_body = sum(stat.size_diff for stat in after.compare_to(before, "lineno")) / len(held)
    # The bytes and an object header; orjson's own bytes keep a 4 KiB buffer.
    assert per_body < len(held[0]) + 100, per_body

"""A JSON log line: its record's own time, to the millisecond, in UTC; its fields, the extras
the logger was given and none of the record's own attributes."""

from __future__ import annotations

import logging

import orjson

from ai_service.observability.logging import JsonFormatter


def line_time(formatter: JsonFormatter, created: float) -> str:
    record = logging.LogRecord("ai_service.access", logging.INFO, "", 0, "call", None, None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    time: str = orjson.loads(formatter.format(record))["time"]
    return time


def test_each_line_carries_its_own_time_across_seconds() -> None:
    formatter = JsonFormatter()
    # 2026-01-31T23:59:59 UTC, then later in that second, then the next day.
    assert line_time(formatter, 1769903999.25) == "2026-01-31T23:59:59.250Z"
    assert line_time(formatter, 1769903999.999) == "2026-01-31T23:59:59.999Z"
    assert line_time(formatter, 1769904000.5) == "2026-02-01T00:00:00.500Z"
    assert line_time(formatter, 1769903999.0) == "2026-01-31T23:59:59.000Z"  # back again


def test_a_line_carries_every_extra_and_none_of_the_record_s_own_attributes() -> None:
    logger = logging.getLogger("ai_service.access")
    extra = {"request_id": "r1", "key": "demo", "attempts": 1, "_private": "hidden"}
    record = logger.makeRecord(logger.name, logging.INFO, "", 0, "call", (), None, extra=extra)
    record.message = "set by a formatter that ran before"
    line = orjson.loads(JsonFormatter().format(record))
    assert set(line) == {"time", "level", "logger", "message", "request_id", "key", "attempts"}
    assert (line["request_id"], line["key"], line["attempts"]) == ("r1", "demo", 1)
    assert (line["level"], line["logger"], line["message"]) == ("info", "ai_service.access", "call")

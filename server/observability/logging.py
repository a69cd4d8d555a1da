"""Structured logs: one JSON object per line on stderr.

A line logged while an AIService call is served carries its `request_id` (the one
returned to the caller in `x-request-id`). Log records carry only what the code
puts in them; callers' and providers' keys are never passed to a logger (see
server/interceptors/auth.py), and every finished line is scrubbed of the configured
secrets all the same (an exception's text may quote an upstream), so a line can be
shipped anywhere.
"""

from __future__ import annotations

import logging
import sys
import time
from itertools import islice
from typing import Any

import orjson

from ai_service.calls.record import current_call
from ai_service.errors import scrub_secrets
from ai_service.observability import access
from ai_service.observability.log_batches import BatchingHandler

_BUILT_IN = vars(logging.LogRecord("", 0, "", 0, "", None, None))
#: A record's own attributes come first, in this order, then the extras: a line's
#: fields start there (the access log's record has ~20 of each).
_EXTRAS_FROM = len(_BUILT_IN)
_STANDARD_ATTRS = frozenset(_BUILT_IN) | {
    "message",
    "asctime",  # set on the record by a formatter that shows the time
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """What a line carries beyond its message: the call's request id and the extras."""
    fields: dict[str, Any] = {}
    call = current_call.get()
    if call is not None:
        fields["request_id"] = call.request_id
    for key, value in islice(vars(record).items(), _EXTRAS_FROM, None):
        if key not in _STANDARD_ATTRS and key[0] != "_":
            fields[key] = value
    return fields


class _SecondStamp:
    """`2026-01-31T12:00:00` for a record's time: formatted once a second, not per line
    (the access log writes a line per call)."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return self._text


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._stamp = _SecondStamp()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": f"{self._stamp(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return scrub_secrets(orjson.dumps(entry, default=str).decode())


class TextFormatter(logging.Formatter):
    """`--log-format text`: for a terminal, with the same fields as `key=value`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        return f"{line} {fields}" if fields else line

    def format(self, record: logging.LogRecord) -> str:
        return scrub_secrets(super().format(record))


def configure_logging(level: str = "info", *, json: bool = True) -> None:
    # No line shows the caller's file and line, thread or process: the logging module
    # need not look them up for every record (a line per call with the access log on).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # The access log's line per call is written in batches (log_batches.py).
    handler = BatchingHandler(sys.stderr, batched=access.log.name)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO; the gateway reports calls itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)

"""The audit log: one JSON line per AIService call, appended, never rewritten.

Each record says who (the key's configured *name*), what (model asked for and
served, provider, deployment), how it ended (status, reason, tokens, latency,
cache hit, PII kinds found) and, only with `include_prompts`, the prompt and
answer as redacted by the policy. No key, provider key or bearer token is in any
field: the call record never holds one.

The event loop only serialises the record and enqueues it; a `QueueListener`
thread appends it through a `RotatingFileHandler` (size-based rotation). `close()`
drains the queue before returning, so a graceful shutdown loses no record.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import time
from pathlib import Path
from typing import Any

import orjson

from server.config import AuditSettings
from server.observability.hooks import CallRecord, Observer


def audit_entry(call: CallRecord) -> dict[str, Any]:
    served = call.served_by
    handle = served.handle if served is not None else None
    entry: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(call.time))
        + f".{int(call.time % 1 * 1000):03d}Z",
        "request_id": call.request_id,
        "method": call.method,
        "key": call.key,
        "model_requested": call.model_requested,
        "model": call.model,
        "model_served": (served.response_model or handle.target.upstream_model)
        if served is not None and handle is not None
        else "",
        "provider": handle.target.provider if handle is not None else "",
        "deployment": handle.name if handle is not None else "",
        "status": call.code.name,
        "reason": call.reason,
        "input_tokens": served.input_tokens if served is not None else 0,
        "output_tokens": served.output_tokens if served is not None else 0,
        "latency_ms": round(call.duration * 1000, 3),
        "attempts": len(call.attempts),
        "cache_hit": bool(call.cache_hit),
        "pii": sorted(call.pii),
    }
    if call.prompt is not None:
        entry["prompt"] = call.prompt
    if call.answer is not None:
        entry["answer"] = call.answer
    return entry


class AuditLog(Observer):
    """An `Observer` that appends a record when a call ends."""

    def __init__(self, settings: AuditSettings) -> None:
        assert settings.path is not None
        self.include_prompts = settings.include_prompts
        path = Path(settings.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path,
            maxBytes=settings.max_bytes,
            backupCount=settings.backup_count,
            encoding="utf-8",
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(self._queue, handler)
        self._handler = handler
        self._listener.start()

    def call_ended(self, call: CallRecord) -> None:
        line = orjson.dumps(audit_entry(call)).decode()
        self._queue.put_nowait(logging.makeLogRecord({"msg": line}))

    def close(self) -> None:
        """Write every queued record, then close the file (blocks: call it off the loop)."""
        self._listener.stop()
        self._handler.close()

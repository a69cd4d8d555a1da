"""The audit log: one JSON line per AIService call, appended, never rewritten.

Each record says who (the caller's configured *name*, what identified it — a config
key, an issued key, a token or a certificate — and its team), what (model asked for and
served, provider, deployment: the one that served the call, or for a failed call the
one whose failure ended it, and every deployment tried), how it ended (status, reason,
tokens, cost, latency, cache hit, PII kinds found; a stream cut short counts the chunks and
estimates the tokens it delivered) and, only with `include_prompts`, the prompt and
answer as redacted by the policy. No key, provider key or bearer token is in any
field: the call record never holds one, and the writer scrubs every record of the
configured secrets all the same (a prompt or an answer may quote one).

The event loop only serialises the record and enqueues it. A writer thread appends
what has queued up in one write through a `RotatingFileHandler` (size-based
rotation), waking at most every `_LINGER_SECONDS`: a record per call, each waking the
thread and taking the GIL from the loop, cost ~160 µs of the loop's time per call
(bench section 4); in batches it is a few µs. `close()` drains the queue before
returning, so a graceful shutdown loses no record.

A call refused before it was authenticated (no key, a wrong key, a throttled peer)
gets no record of its own: anyone can make such calls by the thousand, and each
record would push older ones, of served calls, out through rotation. They are
counted per reason instead, and one summary record per `refusal_summary_seconds`
says how many there were (`"event": "refusals"`).
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import orjson

from ai_service.calls.record import CallRecord, Observer
from ai_service.config import AuditSettings
from ai_service.errors import scrub_secrets
from ai_service.limits.ledger import ESTIMATED, UNPRICED
from ai_service.limits.prices import amount


def _timestamp(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"


def audit_entry(call: CallRecord) -> dict[str, Any]:
    served = call.served_by
    handle = call.deployment
    output, estimated = call.output_tokens()
    entry: dict[str, Any] = {
        "time": _timestamp(call.time),
        "request_id": call.request_id,
        "method": call.method,
        "transport": call.transport,
        "key": call.key,
        "identity": call.identity,
        "team": call.team,
        "model_requested": call.model_requested,
        "model": call.model,
        "model_served": call.model_served,
        "provider": handle.target.provider if handle is not None else "",
        "deployment": handle.name if handle is not None else "",
        "status": call.code.name,
        "reason": call.reason,
        "input_tokens": served.input_tokens if served is not None else 0,
        "output_tokens": output,
        "latency_ms": round(call.duration * 1000, 3),
        "attempts": len(call.attempts),
        "deployments_tried": [attempt.handle.name for attempt in call.attempts],
        "cache_hit": bool(call.cache_hit),
        "pii": sorted(call.pii),
    }
    if estimated:  # no count from the provider: the text delivered, as the budget counts it
        entry["output_tokens_estimated"] = True
    if call.streaming and call.code is not grpc.StatusCode.OK:
        entry["chunks_delivered"] = call.chunks_delivered
    if served is not None:  # the details only when the provider reported them
        for name in ("cached_tokens", "cache_write_tokens", "reasoning_tokens"):
            if getattr(served, name):
                entry[name] = getattr(served, name)
    spend = call.spend
    if spend is not None:  # what the call was charged, estimated when no usage came
        entry["cost"] = amount(spend.cost)
        entry["currency"] = call.currency
        if spend.counts[ESTIMATED]:
            entry["cost_estimated"] = True
        if spend.counts[UNPRICED]:
            entry["unpriced"] = True
    if call.over_soft:
        entry["over_soft_budget"] = list(call.over_soft)
    if call.budget_refused:
        entry["budget_refused"] = call.budget_refused
    if call.parts:
        entry["parts"] = call.parts  # kinds and sizes, never the bytes
    if call.prompt is not None:
        entry["prompt"] = call.prompt
    if call.answer is not None:
        entry["answer"] = call.answer
    return entry


#: How long the writer lets records gather after the first one before writing them.
_LINGER_SECONDS = 0.05
#: Put on the queue by `close()`: everything before it is written, then the thread ends.
_STOP = object()


class AuditLog(Observer):
    """An `Observer` that appends a record when a call ends."""

    def __init__(self, settings: AuditSettings) -> None:
        assert settings.path is not None
        self.include_prompts = settings.include_prompts
        path = Path(settings.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.handlers.RotatingFileHandler(
            path,
            maxBytes=settings.max_bytes,
            backupCount=settings.backup_count,
            encoding="utf-8",
        )
        self._queue: queue.SimpleQueue[str | object] = queue.SimpleQueue()
        self._summary_seconds = settings.refusal_summary_seconds
        #: Calls refused before authentication since the last summary, by reason; the
        #: loop counts, the writer takes them (under the lock).
        self._refused: Counter[str] = Counter()
        self._refused_since = 0.0
        self._lock = threading.Lock()
        self._writer = threading.Thread(target=self._write_batches, name="audit", daemon=True)
        self._writer.start()

    def call_ended(self, call: CallRecord) -> None:
        if not call.key:  # refused before it was authenticated: counted, not recorded
            with self._lock:
                if not self._refused:
                    self._refused_since = time.time()
                self._refused[call.reason or call.code.name] += 1
            return
        self._queue.put_nowait(orjson.dumps(audit_entry(call)).decode())

    def _summary(self, *, final: bool) -> str | None:
        """The refusals summary record, when one is due (at the end: whatever is counted)."""
        with self._lock:
            due = self._refused and (
                final or time.time() - self._refused_since >= self._summary_seconds
            )
            if not due:
                return None
            counts, self._refused = self._refused, Counter()
            since = self._refused_since
        entry = {
            "time": _timestamp(time.time()),
            "event": "refusals",
            "since": _timestamp(since),
            "refused": dict(sorted(counts.items())),
        }
        return orjson.dumps(entry).decode()

    def close(self) -> None:
        """Write every queued record, then close the file (blocks: call it off the loop)."""
        self._queue.put_nowait(_STOP)
        self._writer.join()
        self._handler.close()

    def _write_batches(self) -> None:
        stopping = False
        while not stopping:
            try:
                # Awake at least once a summary period, for the refusals summary.
                lines: list[str | object] = [self._queue.get(timeout=self._summary_seconds)]
            except queue.Empty:
                lines = []
            if lines and lines[0] is not _STOP:
                time.sleep(_LINGER_SECONDS)  # let a burst gather: one write for all of it
            while True:
                try:
                    lines.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # Scrubbed here, off the event loop: a record may hold a long prompt.
            records = [scrub_secrets(line) for line in lines if isinstance(line, str)]
            stopping = len(records) < len(lines)
            summary = self._summary(final=stopping)
            if summary is not None:
                records.append(summary)
            for group in self._groups(records):
                # One record of many lines: the handler checks rotation once, writes once.
                self._handler.handle(logging.makeLogRecord({"msg": "\n".join(group)}))

    def _groups(self, records: list[str]) -> list[list[str]]:
        """`records` in runs that each fit in one file, so rotation still keeps its size."""
        limit = self._handler.maxBytes
        if limit <= 0:
            return [records] if records else []
        groups: list[list[str]] = []
        size = limit
        for record in records:
            if size + len(record) + 1 > limit:
                groups.append([])
                size = 0
            groups[-1].append(record)
            size += len(record) + 1
        return groups

"""The records of the calls in flight, over every door: opened, begun, ended, counted.

A door opens a `CallRecord` as soon as it knows the call (its method and metadata) and
puts it in `current_call` for everything after it in the same task; it begins the record
once the caller is known (or the call was refused), and ends it with the status the
caller got, however the call ended. The count of calls begun and not ended lets a
stopping gateway wait until every record is closed; `grace_ended` says that calls
cancelled from now on were cut by the shutdown, not by their callers.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import Sequence

import grpc

from ai_service.calls.record import REQUEST_ID_KEY, CallRecord, Observer, Transport, current_call
from ai_service.identity.callers import Caller
from ai_service.identity.keyring import Metadata

# A caller's id is echoed into logs, metadata and the audit log: only a plain token
# of at most 64 characters (a UUID is 36) is taken; anything else gets an id of ours.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,64}")

# Fresh ids: a random per-process prefix and a counter (no system call per call).
_ID_PREFIX = uuid.uuid4().hex[:12]
_next_id = itertools.count(1).__next__


def request_id_of(metadata: Metadata | None) -> str:
    """The caller's `x-request-id` when it is a plain token, else a new id."""
    for name, value in metadata or ():
        if name == REQUEST_ID_KEY and isinstance(value, str) and _SANE_REQUEST_ID.fullmatch(value):
            return value
    return f"{_ID_PREFIX}{_next_id():012x}"


class OpenCalls:
    """The calls of one gateway, whatever door they came through."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = tuple(observers)
        #: Set when a stopping gateway's grace has run out: the calls cancelled then
        #: were cut by the shutdown (the caller sees UNAVAILABLE), not by their callers.
        self.grace_ended = False
        #: Calls begun and not yet ended (their record not yet closed).
        self.count = 0
        self._idle: asyncio.Event | None = None

    def open(
        self,
        method: str,
        metadata: Metadata,
        transport: Transport,
        *,
        streaming: bool = False,
    ) -> CallRecord:
        """A new call's record, with its request id, made the task's `current_call`."""
        call = CallRecord(
            self.observers,
            request_id_of(metadata),
            method,
            streaming=streaming,
            metadata=metadata,
            transport=transport,
        )
        current_call.set(call)
        return call

    def begin(self, call: CallRecord, caller: Caller | None) -> None:
        """The call starts being served (or refused): its observers learn of it. From
        here every way out of the call must `end` it."""
        if caller is not None:
            call.identify(caller.name, caller.source, caller.team)
        call.begin()
        self.count += 1

    def end(self, call: CallRecord, code: grpc.StatusCode, reason: str) -> None:
        """The call is over, with the status its caller got and its reason."""
        try:
            call.end(code, reason)
        finally:
            self.count -= 1
            if not self.count and self._idle is not None:
                self._idle.set()

    async def ended(self) -> None:
        """Until no call is left (their records closed)."""
        if self.count:
            if self._idle is None or self._idle.is_set():
                self._idle = asyncio.Event()
            await self._idle.wait()

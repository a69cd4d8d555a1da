"""One HTTP request and its answer, over ASGI: what the door reads and writes of it.

The headers the gateway needs (the credentials, the request id, the trace context) are
picked out in one pass, as the metadata a gRPC call would carry. The body is read up
to its limit (`server.http.max_body_bytes`): a larger one is refused unread. Once the
call is under way the door watches the connection: a caller that closes it cancels the
call (and with it the upstream request), as a gRPC caller's cancel does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ai_service.doors.errors import BodyTooLarge, Headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The request headers the gateway reads: credentials, the caller's request id, its
#: trace context. Nothing else of a request's headers is kept.
_KEPT = frozenset({b"authorization", b"x-api-key", b"x-request-id", b"traceparent", b"tracestate"})

JSON = b"application/json"
_EVENT_STREAM_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # A proxy in front (nginx) must pass each event on as it comes.
    (b"x-accel-buffering", b"no"),
]


class Exchange:
    """The request's scope and ASGI channel, and the state of its answer."""

    __slots__ = (
        "_receive",
        "_send",
        "_task",
        "_watch",
        "content_length",
        "left",
        "metadata",
        "scope",
        "started",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        metadata: list[tuple[str, str | bytes]] = []
        length: int | None = None
        for name, value in scope["headers"]:
            if name in _KEPT:
                metadata.append((name.decode("latin-1"), value.decode("latin-1")))
            elif name == b"content-length" and value.isdigit():
                length = int(value)
        #: The kept headers, as gRPC metadata: (lower-case name, value).
        self.metadata = metadata
        self.content_length = length
        #: The answer's status and headers have gone.
        self.started = False
        #: The caller closed the connection before the answer was complete.
        self.left = False
        self._watch: asyncio.Future[Message] | None = None
        self._task: asyncio.Task[Any] | None = None

    @property
    def peer(self) -> str:
        """The client's address as a gRPC peer string (`ipv4:10.0.0.1:5000`), so the
        failed-authentication throttle counts both doors' callers alike."""
        client = self.scope.get("client")
        if not client:
            return "unknown"
        host, port = client[0], client[1]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"

    async def body(self, limit: int) -> bytes:
        """The whole request body; BodyTooLarge past `limit` bytes."""
        if self.content_length is not None and self.content_length > limit:
            raise BodyTooLarge(self.content_length, limit)
        message = await self._receive()
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body"):
            return chunk
        chunks = [chunk]
        size = len(chunk)
        while message.get("more_body"):
            message = await self._receive()
            if message["type"] != "http.request":  # the caller left mid-body
                self.left = True
                raise asyncio.CancelledError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(None, limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def watch(self) -> None:
        """From now on, a caller that closes the connection cancels this task."""
        self._task = asyncio.current_task()
        self._watch = watch = asyncio.ensure_future(self._receive())
        watch.add_done_callback(self._closed)

    def _closed(self, watch: asyncio.Future[Message]) -> None:
        if watch.cancelled() or watch.exception() is not None:
            return
        if watch.result()["type"] == "http.disconnect" and self._task is not None:
            self.left = True
            self._task.cancel()

    def unwatch(self) -> None:
        watch = self._watch
        if watch is not None:
            self._watch = self._task = None
            if not watch.done():
                watch.remove_done_callback(self._closed)
                watch.cancel()

    async def respond(self, status: int, body: bytes, headers: Headers) -> None:
        """A whole answer: `body` (JSON), with `headers` beside the content type."""
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", JSON),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await self._send({"type": "http.response.body", "body": body})

    async def start_events(self, headers: Headers) -> None:
        """A 200 event stream begins; `write` its events, then `end` it."""
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_EVENT_STREAM_HEADERS, *headers],
            }
        )

    async def write(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        await self._send({"type": "http.response.body", "body": data})

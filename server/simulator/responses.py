"""How answers leave the server: JSON and error responses, paced SSE streams, and the
connection-level misbehaviours (reset, stall, cut) that fault rules ask for."""

from __future__ import annotations

import asyncio
import email.utils
import math
import socket
import struct
import time
from collections.abc import Sequence

from aiohttp import web

from .wire import ApiError, StreamEvent, WireFormat

JSON_HEADERS = {"Content-Type": "application/json"}
_LINGER_ZERO = struct.pack("ii", 1, 0)


def json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers=JSON_HEADERS)


def error_response(
    fmt: WireFormat, error: ApiError, retry_after: float | None = None, *, as_date: bool = False
) -> web.Response:
    response = json_response(fmt.error_body(error), error.status)
    headers = getattr(fmt, "error_headers", None)  # Bedrock names its errors in a header
    if headers is not None:
        response.headers.update(headers(error))
    if retry_after is not None and as_date:
        # HTTP dates have whole seconds: rounded up, never sooner than asked.
        at = math.ceil(time.time() + retry_after)
        response.headers["retry-after"] = email.utils.formatdate(at, usegmt=True)
    elif retry_after is not None:
        # `retry-after` is whole seconds by HTTP; OpenAI's SDK also reads `retry-after-ms`.
        response.headers["retry-after"] = str(math.ceil(retry_after))
        response.headers["retry-after-ms"] = str(round(retry_after * 1000))
    return response


def reset_connection(request: web.Request) -> None:
    """Drop the connection with a TCP RST: a zero linger makes close() discard and reset."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


def close_connection(request: web.Request) -> None:
    """End the connection with a FIN after what was already written (a cut, not a reset)."""
    if request.transport is not None:
        request.transport.close()


async def stall(request: web.Request, seconds: float | None) -> None:
    """Send nothing; the server cancels this handler as soon as the client leaves."""
    if seconds is None:
        await asyncio.Event().wait()
    else:
        await asyncio.sleep(seconds)
    close_connection(request)


async def cut_unary(request: web.Request, body: bytes) -> web.StreamResponse:
    """Announce the whole body, send half of it, then close."""
    response = web.StreamResponse(headers=JSON_HEADERS)
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    close_connection(request)
    return response


class StreamWriter:
    """Writes framed events in order: token events paced at `tokens_per_second` (the first
    token goes with the events before it), everything else as soon as possible.

    `cut_after` closes the connection after that many events; `malformed_after` inserts one
    broken event after that many good ones. `sent` counts events written so far, for the
    disconnect record.
    """

    def __init__(
        self,
        response: web.StreamResponse,
        tokens_per_second: float,
        cut_after: int | None = None,
        malformed: tuple[int, bytes] | None = None,
    ) -> None:
        self.response = response
        self.interval = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        self.cut_after = cut_after
        self.malformed = malformed
        self.sent = 0

    async def write(self, request: web.Request, events: Sequence[StreamEvent]) -> bool:
        """Write the events; False if the stream was cut on purpose."""
        pending: list[bytes] = []
        next_token_at: float | None = None
        for event in events:
            if self.cut_after is not None and self.sent == self.cut_after:
                await self._flush(pending)
                close_connection(request)
                return False
            if self.malformed is not None and self.sent == self.malformed[0]:
                pending.append(self.malformed[1])
            if event.token and self.interval:
                if next_token_at is not None:
                    await self._flush(pending)
                    await asyncio.sleep(max(0.0, next_token_at - time.monotonic()))
                    next_token_at += self.interval
                else:
                    next_token_at = time.monotonic() + self.interval
            pending.append(event.data)
            self.sent += 1
        await self._flush(pending)
        return True

    async def _flush(self, pending: list[bytes]) -> None:
        if pending:
            # One write per burst: with no pacing the whole stream is a single write.
            await self.response.write(b"".join(pending))
            pending.clear()

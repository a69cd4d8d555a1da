"""A raw HTTP/2 client (the `h2` state machine over an asyncio socket) that behaves badly
on purpose: HEADERS without DATA, more streams than the server allows, SETTINGS never
acknowledged, rapid RST_STREAM. gRPC clients never do these things, so only a client that
speaks the wire format itself can show what the gateway does when someone else does
(tests/integration/test_wire_abuse.py, and `python -m bench.keyless`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

MAX_STREAM_ID_LIMIT = 2**31 - 1
#: How long a test waits for the server to do what it must (liveness, not timing).
PATIENCE_SECONDS = 30


@dataclass
class StreamState:
    headers: list[tuple[str, str]] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    data: bytes = b""
    #: The RST_STREAM error code the server sent, if it reset the stream.
    reset: int | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def grpc_status(self) -> str | None:
        for name, value in (*self.headers, *self.trailers):
            if name == "grpc-status":
                return value
        return None

    @property
    def grpc_message(self) -> str:
        for name, value in (*self.headers, *self.trailers):
            if name == "grpc-message":
                return value
        return ""


class RawH2:
    """One HTTP/2 connection to a gRPC server, driven frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.streams: dict[int, StreamState] = {}
        self.settings_received = asyncio.Event()
        self.closed = asyncio.Event()
        self.goaway: h2.events.ConnectionTerminated | None = None
        self._reading: asyncio.Task[None] | None = None
        #: False: never acknowledge the server's SETTINGS (so its limits never apply,
        #: in the letter of HTTP/2), as a hostile client may.
        self.acknowledge_settings = True

    @classmethod
    async def connect(cls, host: str, port: int, *, acknowledge_settings: bool = True) -> RawH2:
        reader, writer = await asyncio.open_connection(host, port)
        raw = cls(reader, writer)
        raw.acknowledge_settings = acknowledge_settings
        raw.conn.initiate_connection()
        await raw.flush()
        raw._reading = asyncio.ensure_future(raw._read())
        # The server's SETTINGS, or the end of the connection (a server at its limit
        # closes it at once).
        waits = [asyncio.ensure_future(e.wait()) for e in (raw.settings_received, raw.closed)]
        try:
            await asyncio.wait(waits, timeout=PATIENCE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return raw

    @property
    def server_max_concurrent_streams(self) -> int:
        return int(self.conn.remote_settings.max_concurrent_streams)

    def ignore_stream_limit(self) -> None:
        """Open streams past what the server advertised, as a hostile client would
        (h2 itself refuses to)."""
        self.conn.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = (
            MAX_STREAM_ID_LIMIT
        )
        self.conn.remote_settings.acknowledge()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def open(
        self,
        path: str,
        metadata: Sequence[tuple[str, str]] = (),
        *,
        message: bytes | None = None,
    ) -> int:
        """A gRPC call's HEADERS; with `message` also its one framed message and END_STREAM,
        without it nothing more (the stream stays open, waiting for a request)."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *metadata,
        ]
        self.streams[stream_id] = StreamState()
        self.conn.send_headers(stream_id, headers)
        if message is not None:
            framed = b"\x00" + len(message).to_bytes(4, "big") + message
            self.conn.send_data(stream_id, framed, end_stream=True)
        await self.flush()
        return stream_id

    async def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id)
        await self.flush()

    async def wait_ended(self, stream_id: int) -> StreamState:
        state = self.streams[stream_id]
        await asyncio.wait_for(state.ended.wait(), PATIENCE_SECONDS)
        return state

    def open_streams(self) -> list[int]:
        return [sid for sid, state in self.streams.items() if not state.ended.is_set()]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close_connection()
            await self.flush()
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(BaseException):
                await self._reading

    async def _read(self) -> None:
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    self._handle(event)
                await self.flush()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.closed.set()
            for state in self.streams.values():
                state.ended.set()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_received.set()
            if not self.acknowledge_settings:
                self.conn.data_to_send()  # h2 has queued the ACK: it is never sent
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        stream_id = getattr(event, "stream_id", None)
        state = self.streams.get(stream_id) if stream_id else None
        if state is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            state.headers.extend(_text(event.headers))
        elif isinstance(event, h2.events.TrailersReceived):
            state.trailers.extend(_text(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            state.data += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            state.reset = int(event.error_code)
            state.ended.set()
        elif isinstance(event, h2.events.StreamEnded):
            state.ended.set()


def _text(headers: Sequence[tuple[str | bytes, str | bytes]]) -> list[tuple[str, str]]:
    return [
        (n.decode() if isinstance(n, bytes) else n, v.decode() if isinstance(v, bytes) else v)
        for n, v in headers
    ]

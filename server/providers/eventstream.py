"""AWS event-stream framing read with botocore's parser: whole, CRC-checked frames.

Bedrock's ConverseStream answers `application/vnd.amazon.eventstream`: binary frames
(a prelude with its CRC-32, headers, a payload, the frame's CRC-32). botocore's
`EventStreamBuffer` splits the bytes into frames and checks both CRCs; this decoder feeds
it as `framing.Batches` does every other framing, so a corrupt frame, a frame too large,
or a body that ends inside a frame is `UpstreamUnavailable`, never a frame half read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from ai_service.errors import UpstreamUnavailable
from ai_service.providers.framing import Batches


class EventStreamDecoder:
    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()
        self._pending = 0  # bytes given to the buffer that no whole frame has used yet

    def feed(self, piece: bytes) -> list[EventStreamMessage]:
        self._buffer.add_data(piece)
        self._pending += len(piece)
        try:
            messages = list(self._buffer)
        except ParserError as exc:  # ChecksumMismatch, InvalidHeadersLength, …
            raise UpstreamUnavailable(
                f"upstream sent a corrupt event-stream frame ({type(exc).__name__}: {exc})"
            ) from None
        for message in messages:
            self._pending -= message.prelude.total_length
        return messages

    def finish(self) -> list[EventStreamMessage]:
        if self._pending:
            raise UpstreamUnavailable(
                f"upstream ended the body inside an event-stream frame ({self._pending} bytes)"
            )
        return []


def iter_event_batches(pieces: AsyncIterator[bytes]) -> Batches[EventStreamMessage]:
    """The frames each network read completed."""
    return Batches(pieces, EventStreamDecoder())

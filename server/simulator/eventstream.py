"""The AWS event-stream binary framing (`application/vnd.amazon.eventstream`), written.

From https://docs.aws.amazon.com/transcribe/latest/dg/streaming-setting-up.html#streaming-event-stream
(the same framing for every AWS event stream): a frame is its total length (u32, big
endian), its headers' length (u32), the CRC-32 of those 8 bytes, the headers, the payload,
and the CRC-32 of everything before it. A header is its name's length (u8), the name, a
value type (7: a string) and the value's length (u16) and bytes. Bedrock's events carry
`:event-type`, `:content-type` and `:message-type: event`; its exceptions
`:exception-type`, `:content-type` and `:message-type: exception`. The payload is the
event's JSON without the event's name.
"""

from __future__ import annotations

import binascii
import struct
from typing import Any

import orjson

_STRING = 7


def _header(name: str, value: str) -> bytes:
    name_bytes, value_bytes = name.encode(), value.encode()
    return (
        struct.pack("!B", len(name_bytes))
        + name_bytes
        + struct.pack("!BH", _STRING, len(value_bytes))
        + value_bytes
    )


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    block = b"".join(_header(name, value) for name, value in headers.items())
    prelude = struct.pack("!II", 12 + len(block) + len(payload) + 4, len(block))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    message = prelude + block + payload
    return message + struct.pack("!I", binascii.crc32(message))


def event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return frame(headers, orjson.dumps(payload))


def exception_frame(exception_type: str, payload: dict[str, Any]) -> bytes:
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, orjson.dumps(payload))

"""What a request may ask (limits), and PII redaction."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from ai_service.config.base import StrictSettings


class RequestLimits(StrictSettings):
    """What one request may ask; above these a call is refused before any upstream call."""

    #: The request's size, not counting the bytes of its images, documents and audio
    #: (which `max_media_bytes` bounds).
    max_request_bytes: int = Field(1024 * 1024, gt=0)
    max_messages: int = Field(1024, gt=0)
    max_tools: int = Field(128, gt=0)
    max_stop_sequences: int = Field(4, gt=0)
    max_metadata_entries: int = Field(64, ge=0)
    #: Content parts over all of a request's messages.
    max_content_parts: int = Field(64, gt=0)
    #: Bytes of images, documents and audio given inline in one request (under the gRPC
    #: message limit, server.max_receive_message_bytes, which bounds it anyway).
    max_media_bytes: int = Field(6 * 1024 * 1024, gt=0)
    #: Texts in one Embed call.
    max_embed_inputs: int = Field(2048, gt=0)


RedactionMode = Literal["off", "redact", "block", "log-only"]

BuiltinDetector = Literal["email", "phone", "credit_card", "ssn", "ip", "iban", "secret"]


class CustomDetector(StrictSettings):
    """A user pattern: matches are redacted as `[REDACTED:<NAME>]`."""

    name: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    pattern: str = Field(min_length=1)

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str) -> str:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if compiled.match("") is not None:
            raise ValueError("matches the empty string: a pattern must match some text")
        return pattern


class RedactionSettings(StrictSettings):
    """PII detection on prompts (and optionally answers), per model or per key."""

    detectors: tuple[BuiltinDetector, ...] = (
        "email",
        "phone",
        "credit_card",
        "ssn",
        "ip",
        "iban",
        "secret",
    )
    custom: tuple[CustomDetector, ...] = ()
    #: For every call: `off`, `redact` (before the upstream sees it), `block`
    #: (FAILED_PRECONDITION) or `log-only` (redact only in the audit log).
    mode: RedactionMode = "off"
    #: Per public model; a key's mode (below) wins over its model's.
    models: dict[str, RedactionMode] = Field(default_factory=dict)
    #: Per caller key name.
    keys: dict[str, RedactionMode] = Field(default_factory=dict)
    #: Also redact answers (unary and streamed) of calls in `redact` or `block` mode.
    answers: bool = False
    #: Streamed answers hold back this many characters so a match split across
    #: chunks is still caught; the longest entity caught whole across chunks.
    stream_window_chars: int = Field(64, ge=1)

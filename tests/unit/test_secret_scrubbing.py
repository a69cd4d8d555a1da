"""The secret registry: which forms of a configured secret are scrubbed, and where."""

from __future__ import annotations

import base64
import logging
import urllib.parse

from ai_service.errors import keep_secret
from ai_service.observability.logging import JsonFormatter, TextFormatter
from ai_service.policy.reflection import ReflectionGuard
from ai_service.secrecy import SecretRegistry
from ai_service_protos.ai_service_pb2 import ChatCompletionChunk

SECRET = "zq7-unit-secret-Hk29fLmw0aPx"


def test_log_lines_carry_no_secret_whatever_the_logger_was_given() -> None:
    keep_secret(SECRET)
    record = logging.makeLogRecord(
        {"msg": "upstream said %s", "args": (SECRET.lower(),), "extra_field": SECRET[:20]}
    )
    record.detail = SECRET  # an extra, as `log.info(..., extra={...})` sets one
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert SECRET.lower()[:14] not in line.lower()
        assert "***" in line


def _chunk(text: str, finish: str = "") -> ChatCompletionChunk:
    piece = ChatCompletionChunk()
    piece.choices.add(index=0, finish_reason=finish).delta.content = text
    return piece


def test_a_secret_split_over_many_chunks_is_scrubbed_and_plain_text_is_not_held() -> None:
    keep_secret(SECRET)
    guard = ReflectionGuard()
    pieces = ["the key: ", SECRET[:5], SECRET[5:12], SECRET[12:20], SECRET[20:], " end. ", ""]
    out = []
    for i, text in enumerate(pieces):
        chunk = _chunk(text, "stop" if i == len(pieces) - 1 else "")
        guard.chunk(chunk)
        out.append(chunk.choices[0].delta.content)
    assert "".join(out) == "the key: *** end. "
    assert out[0] == "the key: "  # nothing of it could begin the secret: sent at once


def test_forms_and_fragments_of_a_secret() -> None:
    registry = SecretRegistry()
    registry.add("Ab3$dE6/gH9+jK2=mN5")
    secret = "Ab3$dE6/gH9+jK2=mN5"
    for leak in (
        secret,
        secret.swapcase(),
        urllib.parse.quote(secret, safe=""),
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(b"u:" + secret.encode()).decode()[4:-4],
        secret[:10],
        secret[-10:],
    ):
        assert registry.scrub(f"<{leak}>").count("***") == 1, leak
    assert registry.scrub(f"<{secret[:9]}>") == f"<{secret[:9]}>"  # under half: shown
    assert registry.scrub("short") == "short"
    registry.add("ollama")  # a placeholder, never a secret
    assert registry.scrub("ollama") == "ollama"

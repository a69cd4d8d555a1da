"""What the simulated model makes of content beyond text: media it describes, reasoning it
produces and signs, prompt-cache hits it reports, embeddings it computes.

All of it deterministic, so tests know exactly what comes back:

- Media: the answer ends with a description of the images, documents and audio of the
  last user message, in order, e.g. `You sent 1 image (image/png, 1,234 bytes).` (a URL
  is described as `by URL`). Each media part counts `MEDIA_PART_TOKENS` prompt tokens.
- Reasoning: `Reasoning: ` and `REASONING_WORDS[level]` words generated from the last
  user message; its words are reasoning tokens, counted in the completion tokens.
  A signature is HMAC-SHA256 of the text under a fixed key, base64; redacted reasoning is
  base64 of a marker, the text and its MAC. Both are checked when they come back.
- Prompt cache: a process-wide set of prefix digests; a prefix seen before is a read.
- Embeddings: `EMBEDDING_DIMENSIONS` float32 values from a BLAKE2b-seeded LCG over the
  model and the text, L2-normalised (after `dimensions` cuts them, as OpenAI's v3 models
  do), rounded to float32 so float and base64 answers agree bit for bit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Final

MEDIA_PART_TOKENS: Final = 85
REASONING_WORDS: Final = {"minimal": 4, "low": 8, "medium": 16, "high": 32, "xhigh": 48, "max": 64}
EMBEDDING_DIMENSIONS: Final = 256
_KEY: Final = b"ai-service simulator reasoning key"
_REDACTED: Final = b"sim-redacted\0"
_MASK64: Final = (1 << 64) - 1
_KIND_NAMES: Final = {"image_url": "image", "file": "document", "input_audio": "audio"}


def _count(n: int, kind: str) -> str:
    return f"{n} {kind}{'' if n == 1 else 's'}"


def _data_url_facts(url: str) -> tuple[str, int] | None:
    """(media type, decoded size) of a base64 data URL."""
    if not url.startswith("data:") or ";base64," not in url:
        return None
    head, _, data = url.partition(";base64,")
    try:
        size = len(base64.b64decode(data, validate=True))
    except binascii.Error:
        return None
    return head[5:] or "application/octet-stream", size


def _facts(part: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, facts) of one OpenAI-shaped media part, e.g. ("image", "image/png, 3 bytes")."""
    kind = _KIND_NAMES.get(str(part.get("type")))
    if kind is None:
        return None
    spec = part.get(part["type"])
    spec = spec if isinstance(spec, dict) else {}
    if kind == "audio":
        data = spec.get("data") if isinstance(spec.get("data"), str) else ""
        size = len(base64.b64decode(data)) if data else 0
        return kind, f"audio/{spec.get('format')}, {size:,} bytes"
    url = spec.get("url") if kind == "image" else spec.get("file_data")
    facts = _data_url_facts(url) if isinstance(url, str) else None
    if facts is None:
        return kind, "by URL"
    media_type, size = facts
    name = spec.get("filename")
    named = f', "{name}"' if kind == "document" and isinstance(name, str) and name else ""
    return kind, f"{media_type}, {size:,} bytes{named}"


def media_of(content: Any) -> list[tuple[str, str]]:
    """(kind, facts) of each media part of an OpenAI-shaped message content, in order."""
    if not isinstance(content, list):
        return []
    found = (_facts(part) for part in content if isinstance(part, dict))
    return [item for item in found if item is not None]


def describe_media(content: Any) -> str | None:
    """`You sent 2 images (image/png, 3 bytes; by URL) and 1 document (...).`, or None."""
    groups: dict[str, list[str]] = {}
    for kind, facts in media_of(content):
        groups.setdefault(kind, []).append(facts)
    if not groups:
        return None
    said = [f"{_count(len(facts), kind)} ({'; '.join(facts)})" for kind, facts in groups.items()]
    listed = said[0] if len(said) == 1 else ", ".join(said[:-1]) + " and " + said[-1]
    return f"You sent {listed}."


# -- reasoning -------------------------------------------------------------------------------


def sign(text: str) -> str:
    return base64.b64encode(hmac.new(_KEY, text.encode(), hashlib.sha256).digest()).decode()


def signature_ok(text: Any, signature: Any) -> bool:
    return (
        isinstance(text, str)
        and isinstance(signature, str)
        and hmac.compare_digest(sign(text), signature)
    )


def redact(text: str) -> str:
    mac = hmac.new(_KEY, _REDACTED + text.encode(), hashlib.sha256).digest()
    return base64.b64encode(_REDACTED + text.encode() + mac).decode()


def redacted_ok(data: Any) -> bool:
    try:
        raw = base64.b64decode(data, validate=True) if isinstance(data, str) else b""
    except binascii.Error:
        return False
    body, mac = raw[:-32], raw[-32:]
    expected = hmac.new(_KEY, body, hashlib.sha256).digest()
    return body.startswith(_REDACTED) and hmac.compare_digest(mac, expected)


def effort_of_budget(budget: int) -> str:
    """A thinking budget as the planner's level (the gateway's own mapping, reversed)."""
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


# -- prompt cache ----------------------------------------------------------------------------


class PromptCache:
    """The prefixes this simulator has seen (process-wide; forgotten on `reset`)."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def seen(self, *parts: Any) -> bool:
        """Whether this prefix was seen before; it is remembered either way."""
        digest = hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()
        if digest in self._seen:
            return True
        self._seen.add(digest)
        return False

    def clear(self) -> None:
        self._seen.clear()


# -- embeddings ------------------------------------------------------------------------------


def embedding(model: str, text: str, dimensions: int | None = None) -> list[float]:
    """The simulator's vector for `text` under `model`, `dimensions` long (or the native)."""
    state = int.from_bytes(hashlib.blake2b(f"{model}\0{text}".encode(), digest_size=8).digest())
    values = []
    for _ in range(dimensions or EMBEDDING_DIMENSIONS):
        state = (state * 6364136223846793005 + 1442695040888963407) & _MASK64
        values.append((state >> 11) / float(1 << 53) * 2 - 1)
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return float32([v / norm for v in values])


def float32(values: Sequence[float]) -> list[float]:
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def packed_base64(values: Iterable[float]) -> str:
    values = list(values)
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()

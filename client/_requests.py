"""Everything about a call that is not I/O, shared by the async and sync clients.

Building requests, the metadata that carries the key, deadlines and reading the
answer out of a response live here once, so `_async.py` and `_sync.py` only move
bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from ai_service_client._params import chat_request
from ai_service_client._service_config import METHOD_DEADLINES
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, ChatCompletionResponse, Message

__all__ = [
    "DEFAULT",
    "CallDefaults",
    "MetadataLike",
    "Timeout",
    "answer_text",
    "build_chat_request",
]

#: Per-call metadata: a mapping or `(key, value)` pairs (pairs allow repeated keys).
MetadataLike: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]


class _Default(enum.Enum):
    TOKEN = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


#: "Use the client's default" for a per-call timeout; `None` already means "no deadline".
DEFAULT = _Default.TOKEN
Timeout: TypeAlias = float | _Default | None
#: The deadlines of a client given none (client/service_config.json's): a unary call,
#: and a stream (which lasts as long as the model writes).
UNARY_DEADLINE_SECONDS = METHOD_DEADLINES["ChatCompletion"]
STREAM_DEADLINE_SECONDS = METHOD_DEADLINES["StreamChatCompletion"]

_AUTHORIZATION = "authorization"


class CallDefaults:
    """What every call carries unless the caller overrides it: the key and a deadline."""

    def __init__(self, api_key: str | None, timeout: Timeout) -> None:
        if api_key is not None:
            # A key read from a file often ends in a newline; gRPC would refuse the
            # header on every call with an obscure "invalid metadata".
            api_key = api_key.strip()
            if not api_key.isascii() or not api_key.isprintable():
                raise ValueError("api_key: may hold only printable ASCII characters")
        self._metadata: tuple[tuple[str, str], ...] = (
            ((_AUTHORIZATION, f"Bearer {api_key}"),) if api_key else ()
        )
        self._timeout = timeout

    def __repr__(self) -> str:
        # Never show the key itself.
        return f"CallDefaults(api_key={'***' if self._metadata else None}, timeout={self._timeout})"

    def timeout(self, override: Timeout, *, stream: bool = False) -> float | None:
        """The deadline in seconds for one call (None: none at all)."""
        chosen = self._timeout if override is DEFAULT else override
        if chosen is DEFAULT:
            return STREAM_DEADLINE_SECONDS if stream else UNARY_DEADLINE_SECONDS
        return chosen

    def metadata(self, extra: MetadataLike | None) -> tuple[tuple[str, str], ...]:
        """The client's metadata with per-call `extra`; keys given in `extra` replace ours."""
        if not extra:
            return self._metadata
        pairs = list(extra.items() if isinstance(extra, Mapping) else extra)
        # gRPC metadata keys are lower-case on the wire; compare them that way.
        pairs = [(key.lower(), value) for key, value in pairs]
        overridden = {key for key, _ in pairs}
        kept = [(key, value) for key, value in self._metadata if key not in overridden]
        return (*kept, *pairs)


def build_chat_request(
    prompt: str, *, model: str, system: str | None = None, **params: Any
) -> ChatCompletionRequest:
    """A one-turn request: an optional system message, then `prompt` as the user message.

    `params` are `ChatCompletionRequest` fields (`max_tokens=256`, `temperature=0.2`,
    `stop=["\\n"]`, `tools=[...]`, ...), read as `chat.completions.create` reads them;
    `None` values are left unset so the server default applies.
    """
    messages = [Message(role="system", content=system)] if system else []
    messages.append(Message(role="user", content=prompt))
    return chat_request(model, messages, **params)


def answer_text(response: ChatCompletionResponse) -> str:
    """The text of the first choice (the one there is unless the provider returned several)."""
    return response.choices[0].message.content if response.choices else ""

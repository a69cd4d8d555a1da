"""What every wire format (OpenAI, Anthropic, Ollama) provides to the shared app.

The app (`app.py`) owns HTTP, faults, pacing and stats; a format only translates: it
validates a parsed request body, turns a `ReplyPlan` into response bytes or stream events,
and renders an `ApiError` in its own error shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .planner import ReplyPlan

if TYPE_CHECKING:
    from aiohttp import web


@dataclass(frozen=True, slots=True)
class ApiError(Exception):
    """An error answer, in neutral words; each format renders it in its own shape."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One framed event of a stream; `token` events are the ones paced by tokens_per_second."""

    data: bytes
    token: bool = False


class WireFormat(Protocol):
    """The translation one upstream API needs; everything else is shared."""

    path: str
    stream_content_type: str

    def check_headers(self, headers: Mapping[str, str]) -> ApiError | None:
        """A header the API requires whatever the key (Anthropic's `anthropic-version`)."""

    def check_auth(self, headers: Mapping[str, str], api_key: str) -> ApiError | None: ...

    def validate(self, body: Any) -> None:
        """Raise `ApiError` (status 400) for what the real API rejects."""

    def model_of(self, body: Any) -> str | None: ...

    def wants_stream(self, body: Any) -> bool: ...

    def plan(self, body: Any) -> ReplyPlan: ...

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes: ...

    def stream_events(self, body: Any, plan: ReplyPlan) -> list[StreamEvent]: ...

    def error_body(self, error: ApiError) -> bytes: ...

    def model_not_found(self, model: str) -> ApiError: ...

    def fault_error(self, status: int, message: str | None) -> ApiError:
        """The error the real API sends with this status (for `status` fault rules)."""

    def malformed_body(self) -> bytes:
        """A 200 body that is not valid JSON."""

    def malformed_event(self) -> bytes:
        """A framed stream event whose payload is not valid JSON."""


def pieces(text: str, size: int) -> list[str]:
    """`text` in pieces of `size` characters: how tool-call arguments stream."""
    return [text[i : i + size] for i in range(0, len(text), size)]


class BoundFormat(Protocol):
    """An API whose URL carries part of the request (the model or deployment, the method):
    each request gets a `WireFormat` bound to what its URL says."""

    #: aiohttp route patterns served.
    routes: tuple[str, ...]

    @property
    def errors(self) -> WireFormat:
        """Renders the error for a URL `bind` refuses."""
        ...

    def bind(self, request: web.Request, raw_body: bytes) -> WireFormat | ApiError:
        """The format for this request, or the error for a URL the API does not serve."""
        ...

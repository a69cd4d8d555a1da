"""The few points where the data path reports to observers: one record per call.

Each door opens a `CallRecord` for every AIService call (`entry.calls`: the telemetry
interceptor for gRPC, the HTTP door for its APIs) and puts it in `current_call`; the
service fills in what it learns (model, first token, redaction findings, the answer for
the audit log); `dispatch.guarded_*` open and close an `AttemptRecord` per upstream
attempt, and count the waits between attempts
(backoff) and for a deployment's slot, which are neither the gateway's own time nor
the upstream's. Observers (metrics, tracing, the audit and access logs) implement
`Observer` and see only those four moments, so the hot path holds a handful of field
writes and, when every observer is off, no calls at all.

An attempt is also what its upstream requests carry of the call (the request id and the
caller's trace context, `providers/http/propagation.py`) and where the HTTP status the
upstream answered is noted, whether or not anything observes the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import grpc

from ai_service.errors import GatewayError, scrub_secrets
from ai_service.limits.token_quota import estimate_chars_as_tokens
from ai_service.providers.http.propagation import forwarded_headers, upstream_attempt

if TYPE_CHECKING:
    from ai_service.limits.ledger import Spend
    from ai_service.routing.router import DeploymentHandle, ModelRoute
    from ai_service_protos.ai_service_pb2 import Usage


@dataclass(slots=True)
class AttemptRecord:
    """One upstream attempt: a deployment tried for a call."""

    handle: DeploymentHandle
    #: 1 for the first attempt of the call; above 1 it is a retry (or a hedge).
    number: int
    #: Served by a fallback model's deployment, not the requested model's own.
    fallback: bool
    #: What its upstream requests carry of the call (request id, trace context).
    forwarded: Mapping[str, str]
    #: Started beside a slow attempt (hedging), not after a failed one.
    hedge: bool = False
    #: Seconds spent waiting on the upstream (for a stream: not the time its
    #: chunks spent with the caller).
    upstream_seconds: float = 0.0
    #: The request went upstream (past the wait for a concurrency slot).
    sent: bool = False
    #: The gateway error's reason, or `CANCELLED`; None while it succeeded.
    error: str | None = None
    #: The status of the upstream's HTTP answer (None: no answer came; a stream cut
    #: after its chunks began has the 200 it started with).
    http_status: int | None = None
    response_model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    #: Of input_tokens: read from and written to the provider's prompt cache; of
    #: output_tokens: spent reasoning (0 when the provider reports none).
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    #: Whatever an observer keeps for the attempt (the tracing span).
    span: Any = None

    def took_usage(self, usage: Usage, model: str) -> None:
        # The upstream names it: spans and the audit record carry it.
        self.response_model = scrub_secrets(model)
        self.input_tokens = usage.prompt_tokens
        self.output_tokens = usage.completion_tokens
        self.cached_tokens = usage.cached_tokens
        self.cache_write_tokens = usage.cache_write_tokens
        self.reasoning_tokens = usage.reasoning_tokens


#: The door a call came in by: the gRPC service, or the HTTP door's OpenAI- and
#: Anthropic-compatible APIs (a metric label: the set stays this small).
Transport = Literal["grpc", "http"]


@dataclass(slots=True)
class CallRecord:
    """Everything observers learn about one call, filled in as it happens."""

    observers: Sequence[Observer]
    request_id: str
    #: The RPC method's short name (`ChatCompletion`); the HTTP door names its calls
    #: after the method that does the same.
    method: str
    streaming: bool
    transport: Transport = "grpc"
    started: float = field(default_factory=time.perf_counter)
    time: float = field(default_factory=time.time)
    #: The caller key's configured name ("" before authentication).
    key: str = ""
    #: What identified the caller: `config_key`, `virtual_key`, `jwt`, `certificate` or
    #: `anonymous` ("" before authentication).
    identity: str = ""
    #: The caller's team ("" for none).
    team: str = ""
    #: What the request asked for (audit only; cut at validation's model-name limit).
    model_requested: str = ""
    #: The public model that routed it ("" when refused before routing); metric label.
    route: ModelRoute | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    #: The attempt whose answer the caller got.
    served_by: AttemptRecord | None = None
    #: The deployment whose answer a single flight shared with this call, which made
    #: no attempt of its own (and spent no tokens).
    shared_from: DeploymentHandle | None = None
    #: A hedge's winner was chosen (`hedge_won`): later successes are not it.
    _hedge_decided: bool = False
    #: When the first chunk that carries output (text, a tool call, reasoning) was
    #: ready for the caller; None for a stream that produced none, and for unary calls.
    first_token: float | None = None
    ended: float | None = None
    #: Seconds spent waiting before retries (backoff, a Retry-After) and for
    #: deployments' concurrency slots: neither the gateway's work nor the upstream's.
    backoff_seconds: float = 0.0
    queued_seconds: float = 0.0
    #: Streams: the chunks that reached the caller, and the characters of text in them.
    chunks_delivered: int = 0
    chars_delivered: int = 0
    code: grpc.StatusCode = grpc.StatusCode.OK
    reason: str = ""
    #: None: no cache lookup happened.
    cache_hit: bool | None = None
    #: PII kinds the redaction policy found in the prompt and the answer.
    pii: set[str] = field(default_factory=set)
    #: The request's images, documents and audio: kind, media type and size or "url"
    #: (never their bytes, nor a URL, which may carry a token).
    parts: list[dict[str, Any]] = field(default_factory=list)
    #: Prompt and answer text (already redacted) when the audit log keeps them.
    prompt: str | None = None
    answer: str | None = None
    #: The caller's metadata, as received (trace context is read from it).
    metadata: Sequence[tuple[str, str | bytes]] = ()
    #: Whatever an observer keeps for the call (the tracing server span).
    span: Any = None
    # --- cost ---
    #: What the call was charged (tokens by kind, cost), in `currency`; None: nothing
    #: (refused, answered from the cache or by a shared call, or failed before sending).
    spend: Spend | None = None
    currency: str = ""
    #: The scopes (`key:…`, `team:…`) over their soft budget when the call was admitted.
    over_soft: tuple[str, ...] = ()
    #: The scope whose hard budget refused the call.
    budget_refused: str = ""
    _forwarded: Mapping[str, str] | None = None

    @property
    def forwarded(self) -> Mapping[str, str]:
        """What the call's upstream requests carry (built at its first attempt)."""
        if self._forwarded is None:
            self._forwarded = forwarded_headers(self.request_id, self.metadata)
        return self._forwarded

    @property
    def model(self) -> str:
        return self.route.name if self.route is not None else ""

    @property
    def duration(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    @property
    def upstream_seconds(self) -> float:
        return sum(attempt.upstream_seconds for attempt in self.attempts)

    @property
    def overhead_seconds(self) -> float:
        """Time in the gateway itself: the call less its upstream attempts, its backoff
        and its waits for a slot (never negative: hedged attempts overlap)."""
        waits = self.upstream_seconds + self.backoff_seconds + self.queued_seconds
        return max(self.duration - waits, 0.0)

    @property
    def last_attempt(self) -> AttemptRecord | None:
        """The attempt whose outcome the caller got: the one that served the call, else
        the last one made (whose failure ended it, or whose stream was cut)."""
        if self.served_by is not None:
            return self.served_by
        return self.attempts[-1] if self.attempts else None

    @property
    def deployment(self) -> DeploymentHandle | None:
        """The deployment that served the call, shared its answer, or failed it last."""
        attempt = self.last_attempt
        return attempt.handle if attempt is not None else self.shared_from

    @property
    def model_served(self) -> str:
        """What the upstream answered as; else the model the deployment was asked for."""
        attempt = self.last_attempt
        if attempt is not None and attempt.response_model:
            return attempt.response_model
        handle = self.deployment
        return handle.target.upstream_model if handle is not None else ""

    def output_tokens(self) -> tuple[int, bool]:
        """(tokens, estimated): the upstream's count of the answer's tokens; for a stream
        it never reported them for (cut short), the text delivered, as the token
        budget estimates it."""
        served = self.served_by
        if served is not None and served.output_tokens:
            return served.output_tokens, False
        if self.chars_delivered:
            return estimate_chars_as_tokens(self.chars_delivered), True
        return 0, False

    def charged(self, spend: Spend, currency: str) -> None:
        self.spend, self.currency = spend, currency

    def identify(self, name: str, source: str, team: str | None) -> None:
        self.key, self.identity, self.team = name, source, team or ""

    def begin(self) -> None:
        for observer in self.observers:
            observer.call_started(self)

    def attempt_started(self, handle: DeploymentHandle) -> AttemptRecord:
        fallback = self.route is not None and not self.route.uses(handle)
        number = len(self.attempts) + 1
        attempt = AttemptRecord(handle, number, fallback, self.forwarded, _hedging.get())
        self.attempts.append(attempt)
        for observer in self.observers:
            observer.attempt_started(self, attempt)
        return attempt

    def attempt_ended(self, attempt: AttemptRecord, error: str | None) -> None:
        attempt.error = error
        if error is None:
            if not self._hedge_decided:
                self.served_by = attempt
        elif self.served_by is attempt:  # a hedge's winning stream failed after all
            self.served_by = None
        for observer in self.observers:
            observer.attempt_ended(self, attempt)

    def hedge_won(self, handle: DeploymentHandle) -> None:
        """The dispatcher chose `handle`'s answer: racers that succeeded too (in the same
        loop turn, or a stream still open) do not say who served the call."""
        self._hedge_decided = True
        # Not merely the handle's latest attempt: a deployment may race itself (the
        # only one, or the only one closed), and its loser has ended CANCELLED by now.
        self.served_by = next(
            (a for a in reversed(self.attempts) if a.handle is handle and a.error is None), None
        )

    def saw_first_token(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()

    def end(self, code: grpc.StatusCode, reason: str) -> None:
        self.ended = time.perf_counter()
        self.code = code
        self.reason = reason
        for observer in self.observers:
            observer.call_ended(self)


class Observer:
    """Metrics, tracing and the audit log: each sees the same moments of a call and
    overrides the ones it needs."""

    def call_started(self, call: CallRecord) -> None:
        pass

    def attempt_started(self, call: CallRecord, attempt: AttemptRecord) -> None:
        pass

    def attempt_ended(self, call: CallRecord, attempt: AttemptRecord) -> None:
        pass

    def call_ended(self, call: CallRecord) -> None:
        pass


#: The call being served by this task (None outside an AIService call).
current_call: ContextVar[CallRecord | None] = ContextVar("current_call", default=None)


REQUEST_ID_KEY = "x-request-id"


def request_id_metadata() -> tuple[tuple[str, str], ...]:
    """The call's request id as response metadata, for the status that ends the call."""
    call = current_call.get()
    return () if call is None else ((REQUEST_ID_KEY, call.request_id),)


def note_cache_lookup(hit: bool) -> None:
    """The response cache was asked for the current call's answer."""
    call = current_call.get()
    if call is not None:
        call.cache_hit = hit


#: Set in the context a hedge's task starts with (`start_hedge`).
_hedging: ContextVar[bool] = ContextVar("hedging", default=False)

T = TypeVar("T")


def start_hedge(attempt: Awaitable[T]) -> asyncio.Task[T]:
    """Run `attempt` in a task of its own, recorded as a hedge rather than a retry."""
    token = _hedging.set(True)
    try:
        return asyncio.ensure_future(attempt)  # the task copies the context now
    finally:
        _hedging.reset(token)


async def back_off(seconds: float) -> None:
    """Wait `seconds` before a retry; the current call counts the wait."""
    started = time.perf_counter()
    try:
        await asyncio.sleep(seconds)
    finally:
        call = current_call.get()
        if call is not None:
            call.backoff_seconds += time.perf_counter() - started


@contextlib.contextmanager
def queued() -> Iterator[None]:
    """Around a wait for a deployment's concurrency slot: the current call counts it."""
    started = time.perf_counter()
    try:
        yield
    finally:
        call = current_call.get()
        if call is not None:
            call.queued_seconds += time.perf_counter() - started


class ObservedAttempt:
    """`with ObservedAttempt(handle) as attempt`: an upstream attempt of the current call,
    reported to its observers and handed to the HTTP side (`attempt` is None outside a
    call).

    A class rather than a generator context manager: it is entered on every attempt.
    """

    __slots__ = ("_attempt", "_call", "_handle")

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle
        self._call: CallRecord | None = None
        self._attempt: AttemptRecord | None = None

    def __enter__(self) -> AttemptRecord | None:
        call = self._call = current_call.get()
        if call is not None:
            self._attempt = attempt = call.attempt_started(self._handle)
            upstream_attempt.set(attempt)
        return self._attempt

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if self._call is not None and self._attempt is not None:
            upstream_attempt.set(None)  # `set`, not a reset: a stream may end in another task
            self._call.attempt_ended(self._attempt, None if exc is None else _reason_of(exc))


def _reason_of(error: BaseException) -> str:
    if isinstance(error, GatewayError):
        return error.reason
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"  # the caller left, or a hedge lost the race
    return type(error).__name__

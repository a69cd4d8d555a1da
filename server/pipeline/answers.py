"""Where a call's answer comes from, and what it costs the caller.

Between the servicer and the dispatcher: a cacheable call is first looked up in
the response cache, and identical cacheable calls in flight at once share one
upstream call (single-flight); every call that may reach the upstream is metered
(pipeline.metering): it holds the most it may cost, in tokens and money, before it
goes, and settles with the real usage after (a caller that shared another's flight is
refunded, as a cache hit costs nothing; one cut short after its request went upstream
is charged its prompt); its answer shows its cost (a stream's last chunk). A finished
answer is stored for the next caller. A stream can be served from the cache as a
stream, and a finished stream fills the cache too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ai_service.calls.record import current_call, note_cache_lookup
from ai_service.config import CacheSettings
from ai_service.identity.callers import Caller
from ai_service.limits.token_quota import estimate_chars_as_tokens
from ai_service.pipeline.cache import ResponseCache, SingleFlight, cache_key, ttl_for
from ai_service.pipeline.dispatch import ChunkStream, Dispatcher, Outcome
from ai_service.pipeline.metering import NOTHING, Charge, Meter, Ticket, settled
from ai_service.providers.translation import text_length
from ai_service.resilience import Budget
from ai_service.routing.router import DeploymentHandle, ModelRoute
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbedRequest,
    EmbedResponse,
    Usage,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Served(Generic[T]):
    value: T
    #: The deployment that answered; None when the answer came from the cache.
    handle: DeploymentHandle | None
    attempts: int


class Answers:
    def __init__(
        self,
        dispatcher: Dispatcher,
        meter: Meter,
        cache: ResponseCache | None,
        settings: CacheSettings,
    ) -> None:
        self._dispatcher = dispatcher
        self.meter = meter
        self._cache = cache
        self._settings = settings
        self.flights: SingleFlight[Outcome[ChatCompletionResponse]] = SingleFlight()

    def _key(self, request: ChatCompletionRequest, route: ModelRoute) -> str | None:
        if self._cache is None:
            return None
        return cache_key(request, self._settings, route.fingerprint)

    async def answer(
        self, request: ChatCompletionRequest, route: ModelRoute, budget: Budget, caller: Caller
    ) -> Served[ChatCompletionResponse]:
        key = self._key(request, route)
        if key is not None:
            cached = await self._lookup(key)
            if cached is not None:
                return Served(cached, None, 0)
        # Each caller's own reservation, before any shared flight: a refusal names the
        # key (or team) that was refused.
        ticket = await self.meter.admit_chat(caller, route, request, _held_for(budget))
        if key is None:
            outcome = await self._charged(request, route, budget, ticket, None)
            return Served(outcome.value, outcome.handle, outcome.attempts)
        led = False

        def lead() -> Awaitable[Outcome[ChatCompletionResponse]]:
            nonlocal led
            led = True  # this caller's reservation pays for the flight, settled by it
            return self._charged(request, route, budget, ticket, key)

        try:
            outcome, shared = await self.flights.run(key, lead)
        finally:
            if not led:  # it shared another's call, as a cache hit would: refunded
                await self.meter.settle_shielded(ticket, NOTHING)
        response = outcome.value
        if shared:  # every waiter gets its own copy: redaction edits it in place
            response = ChatCompletionResponse()
            response.CopyFrom(outcome.value)
            response.cost.CopyFrom(self.meter.free())
            call = current_call.get()
            if call is not None:
                call.shared_from = outcome.handle
        return Served(response, outcome.handle, outcome.attempts)

    async def answer_stream(
        self, request: ChatCompletionRequest, route: ModelRoute, budget: Budget, caller: Caller
    ) -> Served[tuple[ChatCompletionChunk, ChunkStream]]:
        key = self._key(request, route)
        if key is not None:
            cached = await self._lookup(key)
            if cached is not None:
                chunks = replay(cached)
                return Served((await anext(chunks), chunks), None, 0)
        ticket = await self.meter.admit_chat(caller, route, request, _held_for(budget))
        try:
            outcome = await self._dispatcher.dispatch_stream(request, route, budget)
        except BaseException as error:
            await self.meter.settle_shielded(ticket, self.meter.charge_failure(ticket, error))
            raise
        first, rest = outcome.value
        relayed = self._settled_stream(first, rest, ticket, outcome.handle.name, key, request)
        return Served((await anext(relayed), relayed), outcome.handle, outcome.attempts)

    async def _settled_stream(
        self,
        first: ChatCompletionChunk,
        rest: ChunkStream,
        ticket: Ticket,
        deployment: str,
        key: str | None,
        request: ChatCompletionRequest,
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Relay the stream, its cost on the chunk with the usage (the last); settle
        however it ends (from what it delivered, when no usage came); cache it if it
        finished."""
        answer = _Assembler(whole=key is not None)
        charge: Charge | None = None
        finished = False
        try:
            async with contextlib.aclosing(rest):
                chunk: ChatCompletionChunk | None = first
                while chunk is not None:
                    answer.add(chunk)
                    if chunk.HasField("usage") and charge is None:
                        charge = self.meter.charge(
                            ticket, chunk.usage, deployment, shown=chunk.cost
                        )
                    yield chunk
                    chunk = await anext(rest, None)
            finished = True
        finally:
            if charge is None:  # cut short, or no usage reported: what it delivered
                charge = self.meter.charge(ticket, None, deployment, completion_chars=answer.chars)
            await self.meter.settle_shielded(ticket, charge)
        if finished and key is not None:
            await self._store(key, answer.response(), request)

    async def embed(
        self, request: EmbedRequest, route: ModelRoute, budget: Budget, caller: Caller
    ) -> Served[EmbedResponse]:
        """Embeddings, paid for from the caller's token budget like a completion (the
        inputs' estimate reserved first, the reported usage settled after)."""
        chars = sum(len(text) for text in request.inputs)
        ticket = await self.meter.admit(
            caller, route, estimate_chars_as_tokens(chars), 0, _held_for(budget)
        )
        try:
            outcome = await self._dispatcher.dispatch_embed(request, route, budget)
        except BaseException as error:
            await self.meter.settle_shielded(ticket, self.meter.charge_failure(ticket, error))
            raise
        response = outcome.value
        charge = self.meter.charge(ticket, response.usage, outcome.handle.name, shown=response.cost)
        await self.meter.settle_shielded(ticket, charge)
        return Served(response, outcome.handle, outcome.attempts)

    async def _lookup(self, key: str) -> ChatCompletionResponse | None:
        assert self._cache is not None
        payload = await self._cache.get(key)
        note_cache_lookup(payload is not None)
        if payload is None:
            return None
        response = ChatCompletionResponse.FromString(payload)
        response.cached = True
        response.cost.CopyFrom(self.meter.free())
        return response

    async def unwound(self) -> None:
        """Until every flight has ended and every settlement reached the limiter: a
        flight cut by a stop settles its tokens after the calls waiting on it ended."""
        await self.flights.finished()
        await settled()

    async def _charged(
        self,
        request: ChatCompletionRequest,
        route: ModelRoute,
        budget: Budget,
        ticket: Ticket,
        key: str | None,
    ) -> Outcome[ChatCompletionResponse]:
        """The upstream's answer (stored under `key`), settling `ticket` with what it
        used, whoever is still waiting for it (a flight outlives its first caller)."""
        try:
            outcome = await self._dispatcher.dispatch(request, route, budget)
        except BaseException as error:
            await self.meter.settle_shielded(ticket, self.meter.charge_failure(ticket, error))
            raise
        response = outcome.value
        charge = self.meter.charge(
            ticket,
            response.usage,
            outcome.handle.name,
            completion_chars=_text_of(response),
            shown=response.cost,
        )
        await self.meter.settle_shielded(ticket, charge)  # before storing: it may wait
        if key is not None:
            await self._store(key, outcome.value, request)
        return outcome

    async def _store(
        self, key: str, response: ChatCompletionResponse, request: ChatCompletionRequest
    ) -> None:
        if self._cache is not None and response.choices:
            await self._cache.put(
                key, response.SerializeToString(), ttl_for(request, self._settings)
            )


def _held_for(budget: Budget) -> float:
    """How long a call's reservation may be held: its deadline (a process that dies
    holding one, the shared ledger gives it back after that and a grace)."""
    return max(budget.remaining(), 0.0)


def _text_of(response: ChatCompletionResponse) -> int:
    """Characters of the answer's text (an estimate's basis when no usage came)."""
    return sum(len(choice.message.content) for choice in response.choices)


class _Assembler:
    """What a stream delivered: its usage and text size (for the quota) and, when the
    answer is to be cached (`whole`), the whole answer built back from its chunks."""

    def __init__(self, *, whole: bool) -> None:
        self._response = ChatCompletionResponse() if whole else None
        self.usage = Usage()
        self.chars = 0

    def add(self, chunk: ChatCompletionChunk) -> None:
        if chunk.HasField("usage"):
            self.usage.CopyFrom(chunk.usage)
        self.chars += text_length(chunk)
        response = self._response
        if response is None:
            return
        if not response.id:
            response.id, response.model, response.created = chunk.id, chunk.model, chunk.created
            response.provider, response.deployment = chunk.provider, chunk.deployment
        for piece in chunk.choices:
            while len(response.choices) <= piece.index:
                response.choices.add(index=len(response.choices)).message.role = "assistant"
            choice = response.choices[piece.index]
            choice.message.content += piece.delta.content
            for thought in piece.delta.reasoning:
                while len(choice.message.reasoning) <= thought.index:
                    choice.message.reasoning.add()
                block = choice.message.reasoning[thought.index]
                block.text += thought.text
                block.signature += thought.signature
                block.redacted_data += thought.redacted_data
            for delta in piece.delta.tool_calls:
                while len(choice.message.tool_calls) <= delta.index:
                    choice.message.tool_calls.add()
                call = choice.message.tool_calls[delta.index]
                call.id = call.id or delta.id
                call.type = call.type or delta.type
                call.function.name = call.function.name or delta.function.name
                call.function.arguments += delta.function.arguments
            if piece.finish_reason:
                choice.finish_reason = piece.finish_reason

    def response(self) -> ChatCompletionResponse:
        assert self._response is not None, "built with whole=False: no answer was kept"
        self._response.usage.CopyFrom(self.usage)
        return self._response


async def replay(response: ChatCompletionResponse) -> ChunkStream:
    """A cached answer as a stream: the message in one chunk, then finish and usage."""
    for choice in response.choices:
        chunk = _chunk_like(response)
        piece = chunk.choices.add(index=choice.index)
        piece.delta.role = "assistant"
        piece.delta.content = choice.message.content
        for i, block in enumerate(choice.message.reasoning):
            piece.delta.reasoning.add(
                index=i,
                text=block.text,
                signature=block.signature,
                redacted_data=block.redacted_data,
            )
        for i, call in enumerate(choice.message.tool_calls):
            delta = piece.delta.tool_calls.add(index=i, id=call.id, type=call.type)
            delta.function.CopyFrom(call.function)
        yield chunk
    last = _chunk_like(response)
    for choice in response.choices:
        last.choices.add(index=choice.index, finish_reason=choice.finish_reason)
    last.usage.CopyFrom(response.usage)
    last.cost.CopyFrom(response.cost)
    yield last


def _chunk_like(response: ChatCompletionResponse) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id=response.id,
        model=response.model,
        provider=response.provider,
        deployment=response.deployment,
        created=response.created,
        cached=True,
    )

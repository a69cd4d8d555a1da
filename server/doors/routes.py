"""The HTTP door's application: its routes, and the one way every call takes through them.

    POST /v1/chat/completions   OpenAI chat completions, unary or streamed
    POST /v1/embeddings         OpenAI embeddings
    GET  /v1/models             OpenAI's model list (and GET /v1/models/{id})
    POST /v1/messages           Anthropic's Messages API, unary or streamed

Every call takes the same steps as a gRPC call, through the same objects: its record
opened with the request id (`entry.calls`, transport `http`), its caller found and
throttled on failure (`entry.authentication`), a request taken from its rate limit
(`entry.rate`), its body translated to the service's request, then the service core
(`pipeline.core`: validation, routing, redaction, cache, budgets, dispatch, metering)
and the record closed with the status the caller got. Only the translation and the
error shape are the API's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import orjson

from ai_service.calls.record import CallRecord
from ai_service.config import HttpDoorSettings
from ai_service.doors import anthropic, openai
from ai_service.doors.errors import (
    Headers,
    NotServed,
    anthropic_body,
    anthropic_error,
    error_headers,
    http_status,
    openai_body,
    openai_error,
)
from ai_service.doors.exchange import Exchange, Receive, Scope, Send
from ai_service.entry.authentication import Authentication
from ai_service.entry.calls import OpenCalls
from ai_service.entry.rate import take_request
from ai_service.errors import (
    Draining,
    GatewayError,
    Internal,
    InvalidRequest,
    Unauthenticated,
)
from ai_service.identity.callers import Caller
from ai_service.limits.buckets import RateLimiter
from ai_service.pipeline.core import ServiceCore, StreamEnding
from ai_service_protos.ai_service_pb2 import ChatCompletionChunk, ChatCompletionRequest

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What a cut at the end of a stopping gateway's grace leaves a caller still waiting.
_SHUTTING_DOWN = "the gateway is shutting down and its grace period is over"


def _json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or InvalidRequest saying why it is none."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("body", f"is not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("body", "must be a JSON object")
    return payload


def _translated(translate: Callable[[dict[str, Any]], T], body: bytes) -> T:
    """The service's request from an API's body; a body of a shape the translator did not
    foresee is the caller's to mend (400), never an internal error."""
    payload = _json(body)
    try:
        return translate(payload)
    except GatewayError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise InvalidRequest("body", f"does not have the API's shape ({exc})") from None


@dataclass(frozen=True, slots=True)
class Api:
    """How one API spells an error: its body, its stream event, its own headers."""

    name: str
    body: Callable[[GatewayError, int, str], bytes]
    event: Callable[[GatewayError, int, str], bytes]
    #: The request id under the API's own header name too (Anthropic's `request-id`).
    echo_request_id: bool = False


OPENAI = Api(
    "openai",
    lambda error, status, request_id: openai_body(error, status),
    lambda error, status, request_id: openai.ChunkWriter.error(openai_error(error, status)),
)
ANTHROPIC = Api(
    "anthropic",
    anthropic_body,
    lambda error, status, request_id: anthropic.EventWriter.error(
        anthropic_error(error, status, request_id)
    ),
    echo_request_id=True,
)


class HttpApp:
    """The ASGI application of one gateway's HTTP door."""

    def __init__(
        self,
        settings: HttpDoorSettings,
        calls: OpenCalls,
        authentication: Authentication,
        limiter: RateLimiter,
        core: ServiceCore,
    ) -> None:
        self._max_body = settings.max_body_bytes
        self._calls = calls
        self._authentication = authentication
        self._limiter = limiter
        self._core = core
        self._routes: dict[tuple[str, str], Callable[[Exchange], Awaitable[None]]] = {
            ("POST", "/v1/chat/completions"): self._chat_completions,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/messages"): self._messages,
        }
        self._paths = {path for _, path in self._routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan events are sent (off), and no websockets are served
        path: str = scope["path"]
        route = self._routes.get((scope["method"], path))
        exchange = Exchange(scope, receive, send)
        if route is not None:
            await route(exchange)
        elif scope["method"] == "GET" and path.startswith("/v1/models/"):
            await self._model(exchange, path[len("/v1/models/") :])
        else:
            await self._not_served(exchange, path)

    # --- the one way a call takes -----------------------------------------------------------

    async def _caller(self, exchange: Exchange) -> Caller:
        """Who is calling; a failed authentication is throttled by its address."""
        try:
            return await self._authentication.caller(exchange.metadata)
        except Unauthenticated as error:  # a wrong credential: its address pays for it
            raise await self._authentication.judged(exchange.peer, error) from None

    async def _serve(
        self,
        exchange: Exchange,
        api: Api,
        method: str,
        work: Callable[[Exchange, CallRecord, Caller, bytes], Awaitable[None]],
        *,
        read_body: bool = True,
    ) -> None:
        """A call, from its record's opening to its end: `work` answers it, given its
        record, its caller and its body; any way it ends is recorded."""
        calls = self._calls
        call = calls.open(method, exchange.metadata, "http")
        caller: Caller | None = None
        begun = False
        try:
            caller = await self._caller(exchange)
            if caller.rate is not None:  # one request off its rate limit
                await take_request(self._limiter, caller)
            body = b""
            if read_body:
                body = await exchange.body(self._max_body)
                exchange.watch()  # the body read, the connection says only that it closed
            calls.begin(call, caller)
            begun = True
            await work(exchange, call, caller, body)
        except Exception as failure:
            if not begun:
                calls.begin(call, caller)
                begun = True
            if isinstance(failure, GatewayError):
                error = failure
            else:
                log.exception("a call through the HTTP door failed unexpectedly")
                error = Internal("internal error in the gateway")
            await self._failed(exchange, api, call, error)
            calls.end(call, error.code, error.reason)
        except asyncio.CancelledError:
            if not begun:
                calls.begin(call, caller)
            code, reason = self._cut(exchange)
            calls.end(call, code, reason)
            if not exchange.left and not exchange.started:
                # Cut by a stop, not by its caller, who is still there: it is told so.
                cut = Draining(_SHUTTING_DOWN)
                headers = [*self._id_headers(api, call), *error_headers(cut, 503)]
                await exchange.respond(503, api.body(cut, 503, call.request_id), headers)
        except BaseException:
            if not begun:
                calls.begin(call, caller)
            calls.end(call, grpc.StatusCode.INTERNAL, "INTERNAL")
            raise
        else:
            calls.end(call, grpc.StatusCode.OK, "")
        finally:
            exchange.unwatch()

    def _cut(self, exchange: Exchange) -> tuple[grpc.StatusCode, str]:
        """A cancelled call's status: its caller left, or a stop cut it (the task's
        cancellation is taken here either way: the call has ended)."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        if not exchange.left and self._calls.grace_ended:
            return grpc.StatusCode.UNAVAILABLE, "SHUTDOWN"
        return grpc.StatusCode.CANCELLED, "CANCELLED"

    async def _failed(
        self, exchange: Exchange, api: Api, call: CallRecord, error: GatewayError
    ) -> None:
        """The error in the API's shape: a whole answer, or the stream's last event."""
        status = http_status(error)
        if exchange.started:  # a stream that failed after its first event: no [DONE]
            await exchange.end(api.event(error, status, call.request_id))
            return
        headers = [*self._id_headers(api, call), *error_headers(error, status)]
        await exchange.respond(status, api.body(error, status, call.request_id), headers)

    @staticmethod
    def _id_headers(api: Api, call: CallRecord) -> Headers:
        request_id = call.request_id.encode()
        if api.echo_request_id:
            return [(b"x-request-id", request_id), (b"request-id", request_id)]
        return [(b"x-request-id", request_id)]

    async def _not_served(self, exchange: Exchange, path: str) -> None:
        method = exchange.scope["method"]
        if path in self._paths:
            error = NotServed(f"{method} is not allowed on {path}", 405)
        else:
            error = NotServed(f"unknown request URL: {method} {path}", 404)
        api = ANTHROPIC if path == "/v1/messages" else OPENAI
        status = error.http_status
        await exchange.respond(status, api.body(error, status, ""), [])

    # --- OpenAI -----------------------------------------------------------------------------

    async def _chat_completions(self, exchange: Exchange) -> None:
        await self._serve(exchange, OPENAI, "ChatCompletion", self._openai_chat)

    async def _openai_chat(
        self, exchange: Exchange, call: CallRecord, caller: Caller, body: bytes
    ) -> None:
        request, streaming, include_usage = _translated(openai.chat_request, body)
        if not streaming:
            outcome = await self._core.chat(request, caller, None)
            answer = openai.completion_json(outcome.value)
            await exchange.respond(200, answer, self._id_headers(OPENAI, call))
            return
        self._streaming(call)
        async with self._events(exchange, request, caller, OPENAI, call) as (first, rest):
            writer = openai.ChunkWriter(first, include_usage)
            await exchange.write(writer.event(first))
            async for chunk in rest:
                plain = openai.text_only(chunk)
                await exchange.write(
                    writer.event(chunk) if plain is None else writer.text_event(*plain)
                )
            await exchange.end(writer.done())

    async def _embeddings(self, exchange: Exchange) -> None:
        await self._serve(exchange, OPENAI, "Embed", self._openai_embed)

    async def _openai_embed(
        self, exchange: Exchange, call: CallRecord, caller: Caller, body: bytes
    ) -> None:
        request = _translated(openai.embed_request, body)
        outcome = await self._core.embed(request, caller, None)
        answer = openai.embeddings_json(outcome.value)
        await exchange.respond(200, answer, self._id_headers(OPENAI, call))

    async def _models(self, exchange: Exchange) -> None:
        await self._serve(exchange, OPENAI, "ListModels", self._list_models, read_body=False)

    async def _list_models(
        self, exchange: Exchange, call: CallRecord, caller: Caller, body: bytes
    ) -> None:
        answer = openai.models_json(self._core.models(caller))
        await exchange.respond(200, answer, self._id_headers(OPENAI, call))

    async def _model(self, exchange: Exchange, name: str) -> None:
        async def one(exchange: Exchange, call: CallRecord, caller: Caller, body: bytes) -> None:
            answer = openai.model_json(self._core.models(caller), name)
            if answer is None:
                raise NotServed(f"the model {name!r} does not exist or is not yours", 404)
            await exchange.respond(200, answer, self._id_headers(OPENAI, call))

        await self._serve(exchange, OPENAI, "ListModels", one, read_body=False)

    # --- Anthropic --------------------------------------------------------------------------

    async def _messages(self, exchange: Exchange) -> None:
        await self._serve(exchange, ANTHROPIC, "ChatCompletion", self._anthropic_messages)

    async def _anthropic_messages(
        self, exchange: Exchange, call: CallRecord, caller: Caller, body: bytes
    ) -> None:
        request, streaming = _translated(anthropic.messages_request, body)
        if not streaming:
            outcome = await self._core.chat(request, caller, None)
            answer = anthropic.message_json(outcome.value)
            await exchange.respond(200, answer, self._id_headers(ANTHROPIC, call))
            return
        self._streaming(call)
        async with self._events(exchange, request, caller, ANTHROPIC, call) as (first, rest):
            writer = anthropic.EventWriter()
            await exchange.write(writer.start(first) + writer.event(first))
            async for chunk in rest:
                plain = openai.text_only(chunk)
                await exchange.write(
                    writer.text(plain[1])
                    if plain is not None and plain[0] == 0
                    else writer.event(chunk)
                )
            await exchange.end(writer.stop())

    # --- streams ----------------------------------------------------------------------------

    @staticmethod
    def _streaming(call: CallRecord) -> None:
        call.method, call.streaming = "StreamChatCompletion", True

    @contextlib.asynccontextmanager
    async def _events(
        self,
        exchange: Exchange,
        request: ChatCompletionRequest,
        caller: Caller,
        api: Api,
        call: CallRecord,
    ) -> AsyncIterator[tuple[ChatCompletionChunk, AsyncGenerator[ChatCompletionChunk, None]]]:
        """The first chunk and the rest, the 200 and its headers sent between.

        A failure before the first chunk is an error answer with its status; after it,
        the API's error event ends the stream (`_failed`), so neither `[DONE]` nor
        `message_stop` ever follows a failure. Closing the stream closes the upstream's.
        """
        chunks = self._core.stream(request, caller, None, StreamEnding())
        async with contextlib.aclosing(chunks):
            first = await anext(chunks)
            await exchange.start_events(self._id_headers(api, call))
            yield first, chunks

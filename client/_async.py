"""`AsyncAIClient`: the gateway's RPCs over one `grpc.aio` channel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio

from ai_service_client._channel import ChannelOption, ChannelSpec
from ai_service_client._errors import AIServiceError, error_for, translate_rpc_errors
from ai_service_client._requests import (
    DEFAULT,
    CallDefaults,
    MetadataLike,
    Timeout,
    answer_text,
    build_chat_request,
)
from ai_service_client._resources import Chat, Models
from ai_service_client._stubs import AsyncStub, health_request, status_name
from ai_service_client._tls import TLSOptions
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbedRequest,
    EmbedResponse,
    GetUsageRequest,
    GetUsageResponse,
    ListModelsRequest,
    Model,
)

__all__ = ["AsyncAIClient", "AsyncChatStream"]


class AsyncAIClient:
    """An asyncio client for the ai-service gateway; one channel, many concurrent calls.

    Create it inside a running event loop and close it (`async with` or `close()`).
    Every method takes `timeout` (seconds; `None` for no deadline; by default the
    client's `timeout`, itself by default 60 s for a unary call and 600 s for a
    stream) and `metadata` (added to the call; keys given replace the
    client's, e.g. another `authorization`). Failed calls raise `AIServiceError`, as
    the subclass for their status (`RateLimitError`, `BadRequestError`, ...).

    `service_config` is a gRPC service config as JSON text. By default (None) it is
    `client/service_config.json`: gRPC itself retries UNAVAILABLE (up to 3 attempts,
    a stream only before its first chunk) and sets per-method deadlines; `""` uses
    no service config at all.
    """

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        *,
        tls: TLSOptions | None = None,
        timeout: Timeout = DEFAULT,
        service_config: str | None = None,
        options: Sequence[ChannelOption] = (),
    ) -> None:
        # First: a key that cannot be sent is refused before a channel is opened.
        self._defaults = CallDefaults(api_key, timeout)
        spec = ChannelSpec.build(target, tls=tls, service_config=service_config, options=options)
        if spec.credentials is None:
            self._channel = grpc.aio.insecure_channel(spec.target, options=spec.options)
        else:
            self._channel = grpc.aio.secure_channel(
                spec.target, spec.credentials, options=spec.options
            )
        self._stub = AsyncStub.on(self._channel)
        self._closed = False
        self.target = target

    def __repr__(self) -> str:
        return f"AsyncAIClient({self.target!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        """Close the channel; calls still running get `grace` seconds, then are cancelled
        (they raise `AIServiceError` CANCELLED)."""
        self._closed = True
        await self._channel.close(grace)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """`translate_rpc_errors`; and a call cut by `close()` raises AIServiceError
        CANCELLED, not a CancelledError its task never got (it would confuse a TaskGroup)."""
        try:
            with translate_rpc_errors():
                yield
        except asyncio.CancelledError:
            if self._closed and not _task_cancelled():
                raise _closed_error() from None
            raise

    @property
    def chat(
        self,
    ) -> Chat[Coroutine[Any, Any, ChatCompletionResponse], Coroutine[Any, Any, AsyncChatStream]]:
        """`await chat(request)`: one completion of a built `ChatCompletionRequest`.
        `await chat.completions.create(model=..., messages=[...], stream=..., ...)`: the
        same from OpenAI-style arguments (see `Answers.create`); with `stream=True`
        it gives an `AsyncChatStream` to read with `async for`."""
        return Chat(self._chat, self._open_stream)

    @property
    def models(self) -> Models[Coroutine[Any, Any, list[Model]]]:
        """`await models.list()`: the models the key may use (the same as `list_models()`)."""
        return Models(self.list_models)

    async def _chat(
        self,
        request: ChatCompletionRequest,
        *,
        timeout: Timeout = DEFAULT,  # noqa: ASYNC109 (a gRPC deadline, sent to the server)
        metadata: MetadataLike | None = None,
    ) -> ChatCompletionResponse:
        with self._translated():
            return await self._stub.chat(
                request,
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(metadata),
            )

    def stream_chat(
        self,
        request: ChatCompletionRequest,
        *,
        timeout: Timeout = DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> AsyncChatStream:
        """The completion as chunks, as they are generated.

        Use `async for chunk in client.stream_chat(request)`; leaving the loop early
        (break, exception, task cancellation) cancels the call at the server.
        """
        call = self._stub.stream_chat(
            request,
            timeout=self._defaults.timeout(timeout, stream=True),
            metadata=self._defaults.metadata(metadata),
        )
        return AsyncChatStream(call, self)

    async def _open_stream(
        self,
        request: ChatCompletionRequest,
        *,
        timeout: Timeout = DEFAULT,  # noqa: ASYNC109 (a gRPC deadline, sent to the server)
        metadata: MetadataLike | None = None,
    ) -> AsyncChatStream:
        # Awaited, as OpenAI's async client has `await create(..., stream=True)`.
        return self.stream_chat(request, timeout=timeout, metadata=metadata)

    async def list_models(
        self,
        *,
        timeout: Timeout = DEFAULT,  # noqa: ASYNC109 (a gRPC deadline, sent to the server)
        metadata: MetadataLike | None = None,
    ) -> list[Model]:
        """The models the key may use."""
        with self._translated():
            response = await self._stub.list_models(
                ListModelsRequest(),
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(metadata),
            )
        return list(response.models)

    async def embed(
        self,
        request: EmbedRequest,
        *,
        timeout: Timeout = DEFAULT,  # noqa: ASYNC109 (a gRPC deadline, sent to the server)
        metadata: MetadataLike | None = None,
    ) -> EmbedResponse:
        """Embedding vectors, one per input, in order."""
        with self._translated():
            return await self._stub.embed(
                request,
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(metadata),
            )

    async def get_usage(
        self,
        request: GetUsageRequest | None = None,
        *,
        timeout: Timeout = DEFAULT,  # noqa: ASYNC109 (a gRPC deadline, sent to the server)
        metadata: MetadataLike | None = None,
    ) -> GetUsageResponse:
        """Spend, tokens and calls by day and model, and the budget left: the key's own
        by default; another key's or a team's (`request.key`, `request.team`) for a key
        with an admin role."""
        with self._translated():
            return await self._stub.get_usage(
                request or GetUsageRequest(),
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(metadata),
            )

    async def health(
        self,
        service: str = "",
        *,
        timeout: Timeout = DEFAULT,  # noqa: ASYNC109 (a gRPC deadline, sent to the server)
        metadata: MetadataLike | None = None,
    ) -> str:
        """The serving status name (`SERVING`, `NOT_SERVING`, ...) from `grpc.health.v1`.

        `service` "" asks about the server as a whole; an unknown service raises
        `AIServiceError` with code `NOT_FOUND`.
        """
        with self._translated():
            response = await self._stub.health_check(
                health_request(service),
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(metadata),
            )
        return status_name(response)

    async def ask(
        self,
        prompt: str,
        *,
        model: str,
        system: str | None = None,
        timeout: Timeout = DEFAULT,  # noqa: ASYNC109 (a gRPC deadline, sent to the server)
        metadata: MetadataLike | None = None,
        **params: Any,
    ) -> str:
        """Send `prompt` as one user message and return the answer's text.

        `params` are further `ChatCompletionRequest` fields (`max_tokens`, `temperature`, ...).
        """
        request = build_chat_request(prompt, model=model, system=system, **params)
        response = await self._chat(request, timeout=timeout, metadata=metadata)
        return answer_text(response)


class AsyncChatStream:
    """The chunks of one streamed completion, as an async iterator.

    Also an async context manager: leaving the block cancels the call if it is
    still running. `cancel()` does the same at any time.
    """

    def __init__(
        self,
        call: grpc.aio.UnaryStreamCall[ChatCompletionRequest, ChatCompletionChunk],
        client: AsyncAIClient,
    ) -> None:
        # read() rather than the call's own async iterator: that one is an async
        # generator, which would keep the call alive after a `break` until the loop
        # gets round to finalizing it.
        self._call = call
        self._client = client
        self._cancelled = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        if self._cancelled:
            raise StopAsyncIteration
        try:
            with translate_rpc_errors():
                chunk = await self._call.read()
        except asyncio.CancelledError:
            if not _task_cancelled():  # the call was, not this task
                if self._cancelled:
                    # cancel() was called from elsewhere while this read waited: that
                    # ends the stream.
                    raise StopAsyncIteration from None
                if self._client._closed:
                    raise _closed_error() from None
            self.cancel()
            raise
        except BaseException:
            # Whatever stopped this read (an error, the task being cancelled), the
            # server must not keep generating tokens nobody will read.
            self.cancel()
            raise
        if not isinstance(chunk, ChatCompletionChunk):  # grpc.aio.EOF: the stream ended
            raise StopAsyncIteration
        return chunk

    def cancel(self) -> bool:
        """Cancel the call; False if it had already finished."""
        self._cancelled = True
        return self._call.cancel()

    async def aclose(self) -> None:
        """Cancel the call if still running (the async-iterator closing protocol)."""
        self.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()

    def __del__(self) -> None:
        # A loop left with `break` drops the stream: cancel now rather than whenever
        # the call object is collected.
        call = getattr(self, "_call", None)
        # Suppressed: at interpreter exit the loop or channel may already be gone.
        with contextlib.suppress(Exception):
            if call is not None and not call.done():
                call.cancel()


def _closed_error() -> AIServiceError:
    return error_for(grpc.StatusCode.CANCELLED, "the client was closed")


def _task_cancelled() -> bool:
    """Whether the running task itself is being cancelled (not merely a call in it)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0

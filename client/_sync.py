"""`AIClient`: the gateway's RPCs over one blocking `grpc` channel.

The same API as `AsyncAIClient`, for scripts and the `ai-client` command. Safe to
share between threads (gRPC channels are).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import grpc

from ai_service_client._channel import ChannelOption, ChannelSpec
from ai_service_client._errors import AIServiceError, translate_rpc_errors
from ai_service_client._requests import (
    DEFAULT,
    CallDefaults,
    MetadataLike,
    Timeout,
    answer_text,
    build_chat_request,
)
from ai_service_client._resources import Chat, Models
from ai_service_client._stubs import SyncStub, health_request, status_name
from ai_service_client._tls import TLSOptions
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CreateKeyRequest,
    CreateKeyResponse,
    EmbedRequest,
    EmbedResponse,
    GetUsageRequest,
    GetUsageResponse,
    IssuedKey,
    KeySpec,
    ListKeysRequest,
    ListModelsRequest,
    Model,
    RevokeKeyRequest,
    UpdateKeyRequest,
)

__all__ = ["AIClient", "ChatStream"]


class AIClient:
    """A blocking client for the ai-service gateway; see `AsyncAIClient` for the details.

    Every method takes `timeout` (seconds; `None` for no deadline; by default the
    client's `timeout`, itself by default 60 s for a unary call and 600 s for a
    stream) and `metadata`. Failed calls raise `AIServiceError` (a subclass per status:
    `RateLimitError`, `BadRequestError`, ...).
    `service_config` None (the default) uses `client/service_config.json`; `""` none.
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
            self._channel = grpc.insecure_channel(spec.target, options=spec.options)
        else:
            self._channel = grpc.secure_channel(spec.target, spec.credentials, options=spec.options)
        self._stub = SyncStub.on(self._channel)
        self.target = target

    def __repr__(self) -> str:
        return f"AIClient({self.target!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; calls still running are cancelled."""
        self._channel.close()

    @property
    def chat(self) -> Chat[ChatCompletionResponse, ChatStream]:
        """`chat(request)`: one completion of a built `ChatCompletionRequest`.
        `chat.completions.create(model=..., messages=[...], stream=..., ...)`: the same
        from OpenAI-style arguments (see `Answers.create`)."""
        return Chat(self._chat, self.stream_chat)

    @property
    def models(self) -> Models[list[Model]]:
        """`models.list()`: the models the key may use (the same as `list_models()`)."""
        return Models(self.list_models)

    def _chat(
        self,
        request: ChatCompletionRequest,
        *,
        timeout: Timeout = DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> ChatCompletionResponse:
        with translate_rpc_errors():
            return self._stub.chat(
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
    ) -> ChatStream:
        """The completion as chunks, as they are generated.

        Use `for chunk in client.stream_chat(request)`, best inside `with`: leaving
        the block, `cancel()` or an exception while reading cancels the call.
        """
        call = self._stub.stream_chat(
            request,
            timeout=self._defaults.timeout(timeout, stream=True),
            metadata=self._defaults.metadata(metadata),
        )
        return ChatStream(call)

    def list_models(
        self, *, timeout: Timeout = DEFAULT, metadata: MetadataLike | None = None
    ) -> list[Model]:
        """The models the key may use."""
        with translate_rpc_errors():
            response = self._stub.list_models(
                ListModelsRequest(),
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(metadata),
            )
        return list(response.models)

    def embed(
        self,
        request: EmbedRequest,
        *,
        timeout: Timeout = DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> EmbedResponse:
        """Embedding vectors, one per input, in order."""
        with translate_rpc_errors():
            return self._stub.embed(
                request,
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(metadata),
            )

    def get_usage(
        self,
        request: GetUsageRequest | None = None,
        *,
        timeout: Timeout = DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> GetUsageResponse:
        """Spend, tokens and calls by day and model, and the budget left: the key's own
        by default; another key's or a team's (`request.key`, `request.team`) for a key
        with an admin role."""
        with translate_rpc_errors():
            return self._stub.get_usage(
                request or GetUsageRequest(),
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(metadata),
            )

    # -- the Admin service (a caller with an admin role) --------------------------------

    def create_key(self, spec: KeySpec, *, timeout: Timeout = DEFAULT) -> CreateKeyResponse:
        """Issue a key; the response's `secret` is shown this once."""
        with translate_rpc_errors():
            return self._stub.create_key(
                CreateKeyRequest(spec=spec),
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(None),
            )

    def update_key(
        self, key_id: str, spec: KeySpec, fields: Sequence[str] = (), *, timeout: Timeout = DEFAULT
    ) -> IssuedKey:
        """Change the `fields` of an issued key's spec (all of them when empty)."""
        request = UpdateKeyRequest(id=key_id, spec=spec)
        request.update_mask.paths.extend(fields)
        with translate_rpc_errors():
            return self._stub.update_key(
                request,
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(None),
            )

    def revoke_key(self, key_id: str, *, timeout: Timeout = DEFAULT) -> IssuedKey:
        """Revoke an issued key; the key as it was."""
        with translate_rpc_errors():
            response = self._stub.revoke_key(
                RevokeKeyRequest(id=key_id),
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(None),
            )
        return response.key

    def list_keys(self, team: str = "", *, timeout: Timeout = DEFAULT) -> list[IssuedKey]:
        """The issued keys (of `team`, if given), oldest first; never their secrets."""
        with translate_rpc_errors():
            response = self._stub.list_keys(
                ListKeysRequest(team=team),
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(None),
            )
        return list(response.keys)

    def health(
        self,
        service: str = "",
        *,
        timeout: Timeout = DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> str:
        """The serving status name (`SERVING`, `NOT_SERVING`, ...) from `grpc.health.v1`."""
        with translate_rpc_errors():
            response = self._stub.health_check(
                health_request(service),
                timeout=self._defaults.timeout(timeout),
                metadata=self._defaults.metadata(metadata),
            )
        return status_name(response)

    def ask(
        self,
        prompt: str,
        *,
        model: str,
        system: str | None = None,
        timeout: Timeout = DEFAULT,
        metadata: MetadataLike | None = None,
        **params: Any,
    ) -> str:
        """Send `prompt` as one user message and return the answer's text."""
        request = build_chat_request(prompt, model=model, system=system, **params)
        return answer_text(self._chat(request, timeout=timeout, metadata=metadata))


class _StreamCall(Protocol):
    # What grpc's sync unary-stream call is (its class is private).
    def __next__(self) -> ChatCompletionChunk: ...
    def cancel(self) -> bool: ...


class ChatStream:
    """The chunks of one streamed completion, as an iterator; `with` cancels on exit."""

    def __init__(self, call: _StreamCall) -> None:
        self._call = call
        self._cancelled = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> ChatCompletionChunk:
        if self._cancelled:
            raise StopIteration
        try:
            with translate_rpc_errors():
                return next(self._call)
        except StopIteration:
            raise
        except BaseException as error:
            if (
                self._cancelled
                and isinstance(error, AIServiceError)
                and error.code is grpc.StatusCode.CANCELLED
            ):
                # cancel() from another thread while this read waited ends the stream,
                # as it does for the async client.
                raise StopIteration from None
            # Ctrl-C or an error mid-stream: stop the server generating for nobody.
            self.cancel()
            raise

    def cancel(self) -> bool:
        """Cancel the call; False if it had already finished."""
        self._cancelled = True
        return self._call.cancel()

    def close(self) -> None:
        """Cancel the call if still running (the generator-like closing protocol)."""
        self.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()

    def __del__(self) -> None:
        # A `for` loop left with `break` drops the stream: cancel the call now.
        call = getattr(self, "_call", None)
        # Suppressed: at interpreter exit the channel may already be gone.
        with contextlib.suppress(Exception):
            if call is not None:
                call.cancel()

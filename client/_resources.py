"""The OpenAI-shaped face of both clients: `chat.completions.create(...)`, `models.list()`.

One generic implementation serves both clients: each hands over its own calls (blocking
ones, or ones returning a coroutine), so the arguments are handled once, and the
results are what that client's calls return.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, Literal, Protocol, TypeVar, Unpack, overload

from ai_service_client._params import ChatParams, MessageParam, chat_request
from ai_service_client._requests import DEFAULT, MetadataLike, Timeout
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest

__all__ = ["Answers", "Chat", "Models"]

ResultT = TypeVar("ResultT", covariant=True)
UnaryT = TypeVar("UnaryT")
StreamT = TypeVar("StreamT")
ListT = TypeVar("ListT")


class ChatCall(Protocol[ResultT]):
    """A client's unary or streaming chat call."""

    def __call__(
        self,
        request: ChatCompletionRequest,
        *,
        timeout: Timeout = DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> ResultT: ...


class ListCall(Protocol[ResultT]):
    """A client's model listing."""

    def __call__(
        self, *, timeout: Timeout = DEFAULT, metadata: MetadataLike | None = None
    ) -> ResultT: ...


class Answers(Generic[UnaryT, StreamT]):
    """`client.chat.completions`: chat completions from OpenAI-style arguments."""

    def __init__(self, unary: ChatCall[UnaryT], stream: ChatCall[StreamT]) -> None:
        self._unary = unary
        self._stream = stream

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Iterable[MessageParam],
        stream: Literal[False] = False,
        timeout: Timeout = DEFAULT,
        metadata: MetadataLike | None = None,
        **params: Unpack[ChatParams],
    ) -> UnaryT: ...

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Iterable[MessageParam],
        stream: Literal[True],
        timeout: Timeout = DEFAULT,
        metadata: MetadataLike | None = None,
        **params: Unpack[ChatParams],
    ) -> StreamT: ...

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Iterable[MessageParam],
        stream: bool,
        timeout: Timeout = DEFAULT,
        metadata: MetadataLike | None = None,
        **params: Unpack[ChatParams],
    ) -> UnaryT | StreamT: ...

    def create(
        self,
        *,
        model: str,
        messages: Iterable[MessageParam],
        stream: bool = False,
        timeout: Timeout = DEFAULT,
        metadata: MetadataLike | None = None,
        **params: Unpack[ChatParams],
    ) -> UnaryT | StreamT:
        """A chat completion: the `ChatCompletionResponse`, or with `stream=True` its chunks.

        `messages` are `Message`s or dicts (`{"role": "user", "content": "hi"}`);
        `params` are the other `ChatCompletionRequest` fields by name (`temperature`,
        `max_tokens`, `tools`, `response_format`, ...; the request's own `metadata` field
        is `request_metadata`), as the proto values or OpenAI-style dicts. An unknown
        name raises `TypeError` before anything is sent. `timeout` and `metadata` are
        the call's deadline and gRPC metadata, as for every other call of the client.
        """
        request = chat_request(model, messages, **params)
        call = self._stream if stream else self._unary
        return call(request, timeout=timeout, metadata=metadata)


class Chat(Generic[UnaryT, StreamT]):
    """`client.chat(request)` sends a built request; `client.chat.completions.create(...)`
    builds it from OpenAI-style arguments."""

    def __init__(self, unary: ChatCall[UnaryT], stream: ChatCall[StreamT]) -> None:
        self._unary = unary
        self.completions = Answers(unary, stream)

    def __call__(
        self,
        request: ChatCompletionRequest,
        *,
        timeout: Timeout = DEFAULT,
        metadata: MetadataLike | None = None,
    ) -> UnaryT:
        """One chat completion, returned when the model has finished."""
        return self._unary(request, timeout=timeout, metadata=metadata)


class Models(Generic[ListT]):
    """`client.models`: `list()` gives the models the key may use."""

    def __init__(self, list_models: ListCall[ListT]) -> None:
        self._list = list_models

    def list(self, *, timeout: Timeout = DEFAULT, metadata: MetadataLike | None = None) -> ListT:
        """The models the key may use, as `Model` messages."""
        return self._list(timeout=timeout, metadata=metadata)

"""Typed method handles for the gateway's RPCs, for sync and async channels.

The generated `ai_service_pb2_grpc` module is untyped; rather than spread `Any`
through the clients, the method paths are taken from the proto descriptor (so
they cannot drift from the contract) and the multicallables are built here with
their request and response types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2

from ai_service_protos import ai_service_pb2
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
    ListKeysRequest,
    ListKeysResponse,
    ListModelsRequest,
    ListModelsResponse,
    RevokeKeyRequest,
    RevokeKeyResponse,
    UpdateKeyRequest,
)

__all__ = ["AsyncStub", "SyncStub", "health_request", "status_name"]

_SERVICE = ai_service_pb2.DESCRIPTOR.services_by_name["AIService"]
_ADMIN = ai_service_pb2.DESCRIPTOR.services_by_name["Admin"]


def _path(method: str, service: Any = _SERVICE) -> str:
    return f"/{service.full_name}/{service.methods_by_name[method].name}"


_CHAT = _path("ChatCompletion")
_STREAM_CHAT = _path("StreamChatCompletion")
_LIST_MODELS = _path("ListModels")
_EMBED = _path("Embed")
_GET_USAGE = _path("GetUsage")
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
#: The Admin service's methods: (handle name, method, request, response).
_ADMIN_METHODS: tuple[tuple[str, str, Any, Any], ...] = (
    ("create_key", "CreateKey", CreateKeyRequest, CreateKeyResponse),
    ("update_key", "UpdateKey", UpdateKeyRequest, IssuedKey),
    ("revoke_key", "RevokeKey", RevokeKeyRequest, RevokeKeyResponse),
    ("list_keys", "ListKeys", ListKeysRequest, ListKeysResponse),
)


def _handles(channel: grpc.Channel | grpc.aio.Channel) -> dict[str, Any]:
    # The one table of methods; both channel kinds build multicallables the same way.
    admin = {
        name: channel.unary_unary(
            _path(method, _ADMIN),
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        for name, method, request, response in _ADMIN_METHODS
    }
    return {
        **admin,
        "chat": channel.unary_unary(
            _CHAT,
            request_serializer=ChatCompletionRequest.SerializeToString,
            response_deserializer=ChatCompletionResponse.FromString,
        ),
        "stream_chat": channel.unary_stream(
            _STREAM_CHAT,
            request_serializer=ChatCompletionRequest.SerializeToString,
            response_deserializer=ChatCompletionChunk.FromString,
        ),
        "list_models": channel.unary_unary(
            _LIST_MODELS,
            request_serializer=ListModelsRequest.SerializeToString,
            response_deserializer=ListModelsResponse.FromString,
        ),
        "embed": channel.unary_unary(
            _EMBED,
            request_serializer=EmbedRequest.SerializeToString,
            response_deserializer=EmbedResponse.FromString,
        ),
        "get_usage": channel.unary_unary(
            _GET_USAGE,
            request_serializer=GetUsageRequest.SerializeToString,
            response_deserializer=GetUsageResponse.FromString,
        ),
        "health_check": channel.unary_unary(
            _HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        ),
    }


@dataclass(frozen=True)
class SyncStub:
    """The RPCs on a blocking `grpc.Channel`."""

    chat: grpc.UnaryUnaryMultiCallable[ChatCompletionRequest, ChatCompletionResponse]
    stream_chat: grpc.UnaryStreamMultiCallable[ChatCompletionRequest, ChatCompletionChunk]
    list_models: grpc.UnaryUnaryMultiCallable[ListModelsRequest, ListModelsResponse]
    embed: grpc.UnaryUnaryMultiCallable[EmbedRequest, EmbedResponse]
    get_usage: grpc.UnaryUnaryMultiCallable[GetUsageRequest, GetUsageResponse]
    health_check: grpc.UnaryUnaryMultiCallable[Any, Any]  # grpc_health is untyped
    create_key: grpc.UnaryUnaryMultiCallable[CreateKeyRequest, CreateKeyResponse]
    update_key: grpc.UnaryUnaryMultiCallable[UpdateKeyRequest, IssuedKey]
    revoke_key: grpc.UnaryUnaryMultiCallable[RevokeKeyRequest, RevokeKeyResponse]
    list_keys: grpc.UnaryUnaryMultiCallable[ListKeysRequest, ListKeysResponse]

    @classmethod
    def on(cls, channel: grpc.Channel) -> SyncStub:
        return cls(**_handles(channel))


@dataclass(frozen=True)
class AsyncStub:
    """The RPCs on a `grpc.aio.Channel`."""

    chat: grpc.aio.UnaryUnaryMultiCallable[ChatCompletionRequest, ChatCompletionResponse]
    stream_chat: grpc.aio.UnaryStreamMultiCallable[ChatCompletionRequest, ChatCompletionChunk]
    list_models: grpc.aio.UnaryUnaryMultiCallable[ListModelsRequest, ListModelsResponse]
    embed: grpc.aio.UnaryUnaryMultiCallable[EmbedRequest, EmbedResponse]
    get_usage: grpc.aio.UnaryUnaryMultiCallable[GetUsageRequest, GetUsageResponse]
    health_check: grpc.aio.UnaryUnaryMultiCallable[Any, Any]
    create_key: grpc.aio.UnaryUnaryMultiCallable[CreateKeyRequest, CreateKeyResponse]
    update_key: grpc.aio.UnaryUnaryMultiCallable[UpdateKeyRequest, IssuedKey]
    revoke_key: grpc.aio.UnaryUnaryMultiCallable[RevokeKeyRequest, RevokeKeyResponse]
    list_keys: grpc.aio.UnaryUnaryMultiCallable[ListKeysRequest, ListKeysResponse]

    @classmethod
    def on(cls, channel: grpc.aio.Channel) -> AsyncStub:
        return cls(**_handles(channel))


def health_request(service: str) -> Any:
    return health_pb2.HealthCheckRequest(service=service)


def status_name(response: Any) -> str:
    """`SERVING`, `NOT_SERVING`, ... from a HealthCheckResponse."""
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name

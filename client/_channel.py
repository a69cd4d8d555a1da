"""How a client's channel is made: target, credentials and channel arguments.

Shared by both clients; each then opens the channel with its own gRPC flavour
(`grpc` or `grpc.aio`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from ai_service_client._service_config import CHANNEL_SERVICE_CONFIG
from ai_service_client._tls import TLSOptions

__all__ = ["ChannelOption", "ChannelSpec"]

ChannelOption = tuple[str, Any]

_USER_AGENT = ("grpc.primary_user_agent", "ai-service-client")


@dataclass(frozen=True)
class ChannelSpec:
    """Everything needed to open one channel to the gateway."""

    target: str
    credentials: grpc.ChannelCredentials | None  # None: plaintext
    options: tuple[ChannelOption, ...]

    @classmethod
    def build(
        cls,
        target: str,
        *,
        tls: TLSOptions | None,
        service_config: str | None,
        options: Sequence[ChannelOption],
    ) -> ChannelSpec:
        merged: list[ChannelOption] = [_USER_AGENT]
        if service_config is None:
            # Retries of UNAVAILABLE (client/service_config.json); its deadlines are
            # applied per call (CallDefaults).
            service_config = CHANNEL_SERVICE_CONFIG
        if service_config:  # "" opts out: no service config at all
            # gRPC rejects a bad service config only when the channel first connects,
            # with an obscure message; check the JSON here instead.
            try:
                json.loads(service_config)
            except ValueError as error:
                raise ValueError(f"service_config is not valid JSON: {error}") from None
            merged.append(("grpc.service_config", service_config))
        credentials = None
        if tls is not None:
            credentials = tls.credentials()
            merged += tls.channel_options()
        # The caller's options replace ours of the same name (gRPC would keep the first).
        by_name = dict(merged)
        by_name.update(options)
        return cls(target=target, credentials=credentials, options=tuple(by_name.items()))

"""The HTTP door: OpenAI- and Anthropic-compatible APIs beside the gRPC service (`server.http`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from ai_service.config.base import StrictSettings
from ai_service.config.network import split_host_port

#: Where the embedded default (no config file) serves the HTTP door.
EMBEDDED_HTTP_LISTEN = "127.0.0.1:50080"


class HttpDoorSettings(StrictSettings):
    """`POST /v1/chat/completions`, `GET /v1/models`, `POST /v1/embeddings` (OpenAI's API)
    and `POST /v1/messages` (Anthropic's), through the same keys, limits, budgets,
    routes, redaction, cache and audit as the gRPC service. Plaintext HTTP/1.1."""

    #: HOST:PORT to serve on; unset, there is no HTTP door (`--http-listen` sets it).
    listen: str | None = None
    #: The largest request body taken; a larger one is refused (413) unread.
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    #: An idle keep-alive connection is closed after this long. Behind a load balancer,
    #: keep it above the balancer's own idle timeout, so the balancer closes first.
    keepalive_timeout_seconds: float = Field(75.0, gt=0)
    #: Connections plus requests in progress the door holds at once; past it, new
    #: requests are answered 503 at once.
    max_connections: int = Field(1000, gt=0)
    #: Connections the kernel queues before the door accepts them.
    backlog: int = Field(2048, gt=0)

    @field_validator("listen")
    @classmethod
    def _listen_parses(cls, listen: str | None) -> str | None:
        if listen is not None:
            split_host_port(listen)
        return listen

    @property
    def host(self) -> str | None:
        return split_host_port(self.listen)[0] if self.listen is not None else None

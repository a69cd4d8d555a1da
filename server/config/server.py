"""The listeners: gRPC's address, TLS, deadlines, message sizes, keepalive and connection
age; the HTTP door's (`http`, its own module)."""

from __future__ import annotations

from pydantic import Field, field_validator

from ai_service.config.base import StrictSettings
from ai_service.config.http_door import HttpDoorSettings
from ai_service.config.network import split_host_port


class TLSSettings(StrictSettings):
    """TLS on the gRPC listener; with `client_ca_file`, mutual TLS (client certificates needed)."""

    cert_file: str = Field(min_length=1)
    key_file: str = Field(min_length=1)
    #: CA bundle that client certificates must chain to; absent: no client certificates.
    #: (Empty is refused: `${CLIENT_CA:-}` unset must not turn mutual TLS off silently.)
    client_ca_file: str | None = Field(None, min_length=1)


class ServerSettings(StrictSettings):
    listen: str = "127.0.0.1:50051"
    #: Serve over TLS (or mutual TLS) instead of plaintext.
    tls: TLSSettings | None = None
    #: The demo key is refused on a non-loopback address unless TLS is on and this
    #: is set: an explicit decision to expose a well-known key.
    allow_demo_key_off_loopback: bool = False
    #: How long in-flight calls and streams may run on after SIGTERM.
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    #: The deadline of a call whose client set none.
    default_deadline_seconds: float = Field(300.0, gt=0)
    #: Largest request message gRPC accepts; requests above limits.max_request_bytes
    #: but below this get a clear INVALID_ARGUMENT instead of a transport error.
    max_receive_message_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_send_message_bytes: int = Field(8 * 1024 * 1024, gt=0)
    #: Behind a load balancer: ping idle clients this often, and drop them when a ping
    #: goes unanswered for keepalive_timeout_seconds (dead peers free their streams).
    keepalive_time_seconds: float = Field(60.0, gt=0)
    keepalive_timeout_seconds: float = Field(20.0, gt=0)
    #: Close connections after this long (GOAWAY) so long-lived HTTP/2 connections get
    #: rebalanced over replicas; 0 keeps them forever.
    max_connection_age_seconds: float = Field(0.0, ge=0)
    #: How long calls on a closing connection may still run: longer than the longest
    #: stream you allow, or such streams are cut.
    max_connection_age_grace_seconds: float = Field(3600.0, ge=0)
    #: Calls gRPC may hold that the gateway has not taken up yet (it takes them one at
    #: a time, so under overload the queue is here). Past this many, new calls are
    #: refused more and more often, and always past three times as many, at once and
    #: without reaching the gateway: gRPC answers them CANCELLED. Lower bounds the wait
    #: of accepted calls under overload; higher absorbs larger bursts.
    max_pending_calls: int = Field(1000, gt=0)
    #: How long a call may wait, after its headers, for its request message (and a
    #: request-streaming call for each next one) before it is ended DEADLINE_EXCEEDED:
    #: a stream that sends HEADERS alone holds memory until then. Raise it for clients
    #: that send large requests over slow links.
    request_message_timeout_seconds: float = Field(10.0, gt=0)
    #: Calls waiting for their request message at once, over all connections; past it
    #: the one that has waited longest is ended (a call whose message comes with its
    #: headers waits for microseconds: the longest waiting sends nothing).
    max_calls_awaiting_request: int = Field(1000, gt=0)
    #: Calls one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS):
    #: a client opens more only by breaking the protocol, and those are refused
    #: (RST_STREAM REFUSED_STREAM). Well-behaved clients queue beyond it.
    max_concurrent_streams: int = Field(100, gt=0)
    #: Connections the listener holds at once; past it new ones are closed at accept.
    max_connections: int = Field(1000, gt=0)
    #: A connection with no call open this long is closed (GOAWAY): an idle client
    #: reconnects when it next calls. 0 keeps idle connections.
    max_connection_idle_seconds: float = Field(300.0, ge=0)
    #: Health Watch streams open at once (health is open to callers without a key);
    #: past it a new Watch is refused RESOURCE_EXHAUSTED, and Check still answers.
    max_health_watches: int = Field(1000, gt=0)
    #: How long a new connection may take over its TLS handshake and HTTP/2 preface,
    #: and a client to acknowledge the server's HTTP/2 SETTINGS.
    handshake_timeout_seconds: float = Field(10.0, gt=0)
    #: The HTTP door (OpenAI- and Anthropic-compatible APIs); off unless `http.listen`.
    http: HttpDoorSettings = Field(default_factory=HttpDoorSettings)

    @field_validator("listen")
    @classmethod
    def _listen_parses(cls, listen: str) -> str:
        split_host_port(listen)
        return listen

    @property
    def host(self) -> str:
        return split_host_port(self.listen)[0]

"""The gateway's configuration: one typed object, validated once at start.

Loaded from YAML with `${ENV}` / `${ENV:-default}` interpolation (so provider keys
stay out of the file); every error names the path of the bad field, e.g.
`models[2].provider: unknown provider 'opneai'`. Nothing else in the server reads
the environment.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

import yaml
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from protos import ai_service_pb2

DEMO_KEY = "demo-key"
_DEMO_DIGEST = hashlib.sha256(DEMO_KEY.encode()).digest()
CONFIG_ENV_VAR = "AI_SERVICE_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the field."""


class _Strict(BaseModel):
    # Unknown keys are typos until proven otherwise.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSSettings(_Strict):
    """TLS on the gRPC listener; with `client_ca_file`, mutual TLS (client certificates needed)."""

    cert_file: str = Field(min_length=1)
    key_file: str = Field(min_length=1)
    #: CA bundle that client certificates must chain to; absent: no client certificates.
    #: (Empty is refused: `${CLIENT_CA:-}` unset must not turn mutual TLS off silently.)
    client_ca_file: str | None = Field(None, min_length=1)


class ServerSettings(_Strict):
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

    @field_validator("listen")
    @classmethod
    def _listen_parses(cls, listen: str) -> str:
        split_host_port(listen)
        return listen

    @property
    def host(self) -> str:
        return split_host_port(self.listen)[0]


class RateLimitSettings(_Strict):
    #: Sustained requests per minute per key; 0 switches the limit off.
    requests_per_minute: int = Field(600, ge=0)
    #: Requests a key may send at once before the rate applies (default: a minute's worth).
    burst: int | None = Field(None, gt=0)
    #: Sustained tokens (prompt + completion) per minute per key; 0 switches it off.
    tokens_per_minute: int = Field(0, ge=0)
    #: Tokens a key may spend at once (default: a minute's worth).
    token_burst: int | None = Field(None, gt=0)


class SharedStateSettings(_Strict):
    """Where replicas share rate limits and the response cache."""

    #: `memory` (this process only) or `redis` (every process and replica on it).
    backend: Literal["memory", "redis"] = "memory"
    #: redis://[:password@]host:port/db (usually `${REDIS_URL}`).
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Prefix of every key the gateway writes, so several gateways can share a Redis.
    key_prefix: str = "ai-service"
    #: A Redis call that takes longer fails: the gateway never hangs on a dead Redis.
    timeout_ms: float = Field(100.0, gt=0)
    #: Rate limits in Redis are spent from local leases of this share of a bucket's
    #: burst (one Redis call per lease, not per call); 0 asks Redis on every call.
    lease_fraction: float = Field(0.01, ge=0, lt=1)
    #: Redis connections per process; more concurrent Redis calls wait (within
    #: `timeout_ms`) for one to be free.
    max_connections: int = Field(100, gt=0)
    #: When Redis fails: `open` lets calls through unlimited and uncached, `closed`
    #: refuses them (UNAVAILABLE) until it is back.
    on_failure: Literal["open", "closed"] = "open"


class CacheSettings(_Strict):
    """Exact-match response cache (in the shared-state backend)."""

    enabled: bool = False
    #: `deterministic`: only calls with temperature 0 or a fixed seed; `always`: every call.
    when: Literal["deterministic", "always"] = "deterministic"
    ttl_seconds: float = Field(300.0, gt=0)
    #: Entries kept by the in-memory cache (least recently used go first).
    max_entries: int = Field(10_000, gt=0)


class CallerKey(_Strict):
    """One caller credential: a name (what logs and metrics show) and the secret or its hash."""

    name: str = Field(min_length=1)
    #: The key itself (usually `${ENV}`); or give `key_sha256` and keep the file harmless.
    key: SecretStr | None = None
    #: `sha256:<hex>` of the key.
    key_sha256: str | None = None
    #: Models this key may use; empty means all.
    models: tuple[str, ...] = ()
    #: Overrides the default rate limit for this key.
    rate_limit: RateLimitSettings | None = None
    #: The most max_tokens this key may ask for (a call that sets none gets this cap).
    max_output_tokens: int | None = Field(None, gt=0)
    #: Streams this key may hold open at once (per gateway process).
    max_concurrent_streams: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one_secret(self) -> CallerKey:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of 'key' or 'key_sha256'")
        if self.key is not None and not self.key.get_secret_value():
            raise ValueError("key is empty (is its environment variable set?)")
        if self.key_sha256 is not None and not re.fullmatch(
            r"sha256:[0-9a-f]{64}", self.key_sha256
        ):
            raise ValueError("key_sha256 must be 'sha256:' followed by 64 lowercase hex digits")
        return self

    @property
    def digest(self) -> bytes:
        if self.key is not None:
            return hashlib.sha256(self.key.get_secret_value().encode()).digest()
        assert self.key_sha256 is not None
        return bytes.fromhex(self.key_sha256.removeprefix("sha256:"))

    @property
    def is_demo(self) -> bool:
        # By digest: the demo key given as its hash is still the demo key.
        return self.digest == _DEMO_DIGEST


class AuthSettings(_Strict):
    #: Off only for local experiments: every call is then accepted as 'anonymous'.
    enabled: bool = True
    keys: tuple[CallerKey, ...] = ()


class Timeouts(_Strict):
    #: Opening a TCP (and TLS) connection to the upstream.
    connect: float = Field(5.0, gt=0)
    #: The longest gap between two reads: for streams, time to first token included.
    read: float = Field(60.0, gt=0)
    write: float = Field(10.0, gt=0)
    #: Waiting for a free connection of the pool.
    pool: float = Field(10.0, gt=0)


class PoolSettings(_Strict):
    #: An HTTP/1.1 stream holds a connection for its whole life: streaming workloads
    #: need as many as they hold streams open at once.
    max_connections: int = Field(1000, gt=0)
    max_keepalive_connections: int = Field(100, ge=0)
    keepalive_expiry_seconds: float = Field(30.0, ge=0)


# --- egress: how the gateway reaches its upstreams (proxy, TLS) ------------------------


class UpstreamTLSSettings(_Strict):
    """TLS towards https upstreams: whom to trust and what to show; TLS 1.2 at least.

    A provider's own block overrides the top-level one in pairs: `ca_file` and `verify`
    together (whom to trust), `cert_file` and `key_file` together (what to show).
    """

    #: CA bundle (PEM) that upstream certificates must chain to, in place of the system's
    #: trust store: a company's private CA, or the CA of a TLS-inspecting proxy.
    ca_file: str | None = Field(None, min_length=1)
    #: false accepts any certificate for any name (a WARNING is logged at start): only for
    #: an upstream whose certificate cannot be fixed. Default true.
    verify: bool | None = None
    #: Client certificate (PEM) shown to upstreams that require one (mutual TLS) ...
    cert_file: str | None = Field(None, min_length=1)
    #: ... and its private key, unless it is in cert_file.
    key_file: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _usable(self) -> UpstreamTLSSettings:
        if self.verify is False and self.ca_file is not None:
            raise ValueError("ca_file: has no use with verify: false (nothing is checked)")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file: given without cert_file")
        self.context()  # refuses unreadable or mismatched files now, not at the first call
        return self

    @property
    def trust_set(self) -> bool:
        return self.ca_file is not None or self.verify is not None

    @property
    def identity_set(self) -> bool:
        return self.cert_file is not None

    def context(self) -> ssl.SSLContext:
        """The client-side SSL context these settings describe (a new one per call)."""
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.ca_file is not None:
            _load("ca_file", self.ca_file, lambda: context.load_verify_locations(self.ca_file))
        if self.cert_file is not None:
            cert, key = self.cert_file, self.key_file

            def load_identity() -> None:
                # An encrypted key is refused, never asked for on a terminal.
                context.load_cert_chain(cert, key, password=_no_password)

            _load("cert_file", cert, load_identity)
        return context


def _no_password() -> str:
    return ""


def _load(field: str, path: str, load: Callable[[], None]) -> None:
    try:
        load()
    except ssl.SSLError as exc:
        # OpenSSL says no more than "PEM lib" for, among others, an encrypted key.
        why = exc.reason or "PEM lib"
        if why == "PEM lib":
            why = "not a PEM certificate" + (
                " and unencrypted private key" if field == "cert_file" else ""
            )
        raise ValueError(f"{field}: cannot use {path}: {why}") from None
    except OSError as exc:
        raise ValueError(f"{field}: cannot read {path}: {exc.strerror}") from None


#: `proxy: direct`: no proxy for this provider, whatever the defaults or environment say.
DIRECT = "direct"


class EgressSettings(_Strict):
    """How the gateway reaches upstreams. The top-level `egress` block is every provider's
    default; a provider's own `egress` overrides it setting by setting."""

    #: The HTTP proxy upstream connections go through, `http://[user:password@]host:port`
    #: (give credentials as `${ENV}`): https upstreams are tunnelled with CONNECT, http
    #: ones forwarded. `direct`: no proxy. Unset: the environment's, if trust_env.
    proxy: SecretStr | None = None
    #: Take the proxy from HTTPS_PROXY / HTTP_PROXY (for https / http upstreams) and
    #: NO_PROXY, or their lowercase forms, when `proxy` is unset. Default true.
    trust_env: bool | None = None
    tls: UpstreamTLSSettings = Field(default_factory=UpstreamTLSSettings)

    @field_validator("proxy")
    @classmethod
    def _proxy_is_http(cls, proxy: SecretStr | None) -> SecretStr | None:
        if proxy is not None and not proxy.get_secret_value():
            raise ValueError(f"is empty (is its environment variable set?); '{DIRECT}' means none")
        if proxy is not None and proxy.get_secret_value() != DIRECT:
            proxy_address(proxy.get_secret_value())
        return proxy

    @property
    def proxy_url(self) -> str | None:
        """The proxy to use (credentials included), or None to connect directly."""
        url = self.proxy.get_secret_value() if self.proxy is not None else None
        return None if url in (None, DIRECT) else url


def proxy_address(url: str) -> tuple[str, int]:
    """(host, port) of an `http://` proxy URL; the errors never quote the URL, which may
    hold credentials."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ValueError(
            f"a {parts.scheme}:// proxy is not supported; give http://host:port "
            f"(https upstreams are still encrypted end to end, tunnelled with CONNECT)"
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError("the proxy URL's port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ValueError("the proxy URL names no host")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError("the proxy URL has a path: give http://[user:password@]host:port")
    return parts.hostname, port


def _environment_proxy(base_url: str, env: Mapping[str, str]) -> str | None:
    """The proxy the environment gives for `base_url`, as curl and other HTTP tools read it
    (the lowercase name first), or None when none is set or NO_PROXY exempts the host."""
    scheme = urlsplit(base_url).scheme
    name = f"{scheme}_proxy"
    proxy = env.get(name) or env.get(name.upper())
    if not proxy:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    if _exempt(urlsplit(base_url), no_proxy):
        return None
    try:
        proxy_address(proxy)
    except ValueError as exc:
        source = name if env.get(name) else name.upper()
        raise ValueError(
            f"{source} from the environment: {exc} (or set trust_env: false)"
        ) from None
    return proxy if "://" in proxy else f"http://{proxy}"


def _exempt(url: SplitResult, no_proxy: str) -> bool:
    """Whether NO_PROXY (`*`, or host names, domain suffixes and host:port, by commas)
    names the host of `url`."""
    host = (url.hostname or "").lower()
    address = f"{host}:{url.port}" if url.port else host
    for entry in no_proxy.lower().split(","):
        name = entry.strip().removeprefix("*").lstrip(".")
        if entry.strip() == "*" or name in (host, address) or host.endswith(f".{name}"):
            return True
    return False


def effective_egress(
    own: EgressSettings, defaults: EgressSettings, base_url: str, env: Mapping[str, str] | None
) -> EgressSettings:
    """A provider's egress with the defaults filled in and the proxy decided (`direct` when
    there is none); `env` None leaves an unset proxy unset (no environment to ask)."""
    trust_env = own.trust_env if own.trust_env is not None else defaults.trust_env
    trust_env = trust_env is not False
    proxy = own.proxy if own.proxy is not None else defaults.proxy
    if proxy is None and env is not None:
        found = _environment_proxy(base_url, env) if trust_env else None
        proxy = SecretStr(found or DIRECT)
    mine, theirs = own.tls, defaults.tls
    if urlsplit(base_url).scheme != "https":
        theirs = UpstreamTLSSettings()  # no TLS to use them on
    trust = mine if mine.trust_set else theirs
    identity = mine if mine.identity_set else theirs
    tls = UpstreamTLSSettings.model_construct(  # both halves were validated already
        ca_file=trust.ca_file,
        verify=trust.verify,
        cert_file=identity.cert_file,
        key_file=identity.key_file,
    )
    return EgressSettings.model_construct(proxy=proxy, trust_env=trust_env, tls=tls)


class ProviderSettings(_Strict):
    """One upstream API endpoint, reached through one shared connection pool."""

    name: str = Field(min_length=1)
    #: The wire format: `openai` (and every OpenAI-compatible server), `anthropic`
    #: (the Messages API) or `ollama` (Ollama's native `/api/chat`).
    kind: Literal["openai", "anthropic", "ollama"] = "openai"
    #: What the adapter's path is appended to. openai: the API base with its version,
    #: e.g. https://api.openai.com/v1 (+ `/chat/completions`); anthropic: the origin,
    #: e.g. https://api.anthropic.com (+ `/v1/messages`); ollama: the origin, e.g.
    #: http://localhost:11434 (+ `/api/chat`).
    base_url: str
    #: The gateway's key for this upstream, only ever from the environment (`${NAME}`) ...
    api_key: SecretStr | None = None
    #: ... or from a file (e.g. a mounted secret), re-read on every config reload.
    api_key_file: str | None = None
    #: Extra headers sent upstream on every call (e.g. an organisation id).
    headers: dict[str, str] = Field(default_factory=dict)
    #: The HTTP client behind the seam: `h1` (the gateway's own), `aiohttp`, `httpx2` or
    #: `httpx`; see server/providers/http.py for the numbers that chose the default.
    http_client: Literal["h1", "aiohttp", "httpx2", "httpx"] = "h1"
    timeouts: Timeouts = Field(default_factory=Timeouts)
    pool: PoolSettings = Field(default_factory=PoolSettings)
    #: kind anthropic: the `anthropic-version` header sent with every call.
    anthropic_version: str = Field("2023-06-01", min_length=1)
    #: kind openai: the request field that carries `max_tokens`. OpenAI deprecated
    #: `max_tokens` and its reasoning models (o-series, gpt-5) refuse it; `max_tokens`
    #: is for compatible servers that only know the old name.
    max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"
    #: Proxy and TLS towards this upstream, over the top-level `egress` defaults.
    egress: EgressSettings = Field(default_factory=EgressSettings)

    @model_validator(mode="before")
    @classmethod
    def _key_from_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("api_key_file") is None:
            return data
        if data.get("api_key") is not None:
            raise ValueError("give api_key or api_key_file, not both")
        path = data["api_key_file"]
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"api_key_file: cannot read {path}: {exc.strerror}") from None
        if not key:
            raise ValueError(f"api_key_file: {path} is empty")
        return {**data, "api_key": key}

    @model_validator(mode="after")
    def _base_url_is_http(self) -> ProviderSettings:
        if not re.match(r"https?://[^/\s]+", self.base_url):
            raise ValueError("base_url must start with http:// or https:// and name a host")
        return self


class DeploymentSettings(_Strict):
    """One place a model is served: a provider and the model name it expects."""

    provider: str
    upstream_model: str = Field(min_length=1)
    #: Share of calls under weighted-random balancing.
    weight: float = Field(1.0, gt=0)
    #: Calls in flight at once on this deployment (default: resilience.concurrency).
    max_concurrency: int | None = Field(None, gt=0)
    #: Calls that may wait for a slot (default: resilience.concurrency).
    max_queue: int | None = Field(None, ge=0)


class RoutingRule(_Strict):
    """Send a call to another model when the request matches (e.g. a long-context model)."""

    #: Matches when the characters of all message contents reach this many.
    min_prompt_chars: int = Field(gt=0)
    #: The model that serves matching calls instead.
    model: str


SERVICE_NAME = ai_service_pb2.DESCRIPTOR.services_by_name["AIService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
#: Names the health service answers for already: a model of that name would overwrite
#: their status with its own.
_SERVICE_NAMES = frozenset(
    {
        SERVICE_NAME,
        HEALTH_SERVICE_NAME,
        reflection.SERVICE_NAME,
        "grpc.reflection.v1.ServerReflection",
    }
)


class ModelSettings(_Strict):
    """A public model name and the deployments that serve it."""

    name: str = Field(min_length=1)

    #: Short form for a single deployment: `provider` + `upstream_model`.
    provider: str | None = None
    upstream_model: str | None = Field(None, min_length=1)
    #: Or several deployments, balanced and failed over between.
    deployments: tuple[DeploymentSettings, ...] = ()
    balancing: Literal["weighted_random", "least_outstanding"] = "weighted_random"
    #: Models tried, in order, when every deployment of this one failed or is open.
    fallbacks: tuple[str, ...] = ()
    #: Content-aware routing, first match wins.
    rules: tuple[RoutingRule, ...] = ()
    #: Start the same call on a second deployment when the first has not answered
    #: (or sent its first token) by then; the first to answer wins.
    hedge_after_ms: float | None = Field(None, gt=0)
    #: Upper bound on max_tokens a caller may ask of this model.
    max_output_tokens: int | None = Field(None, gt=0)
    #: max_tokens sent when a request sets none, to providers whose API requires one
    #: (Anthropic); OpenAI and Ollama leave it unset (the model's own limit). Capped
    #: by max_output_tokens.
    default_max_tokens: int = Field(1024, gt=0)

    @property
    def effective_default_max_tokens(self) -> int:
        cap = self.max_output_tokens
        return self.default_max_tokens if cap is None else min(self.default_max_tokens, cap)

    @field_validator("name")
    @classmethod
    def _not_a_service_name(cls, name: str) -> str:
        if name in _SERVICE_NAMES:
            raise ValueError(f"{name!r} is a gRPC service's name, which health reports on")
        return name

    @model_validator(mode="after")
    def _one_way_to_deploy(self) -> ModelSettings:
        short = self.provider is not None or self.upstream_model is not None
        if short and self.deployments:
            raise ValueError("give either provider + upstream_model or deployments, not both")
        if short and (self.provider is None or self.upstream_model is None):
            raise ValueError("the short form needs both provider and upstream_model")
        if not short and not self.deployments:
            raise ValueError("give provider + upstream_model, or deployments")
        if self.name in self.fallbacks:
            raise ValueError("fallbacks: a model cannot fall back to itself")
        return self

    @property
    def targets(self) -> tuple[DeploymentSettings, ...]:
        """The deployments, whichever form the config used."""
        if self.deployments:
            return self.deployments
        assert self.provider is not None and self.upstream_model is not None
        return (DeploymentSettings(provider=self.provider, upstream_model=self.upstream_model),)


class RetrySettings(_Strict):
    #: Attempts per call at most, across deployments and fallbacks, the first included.
    max_attempts: int = Field(3, ge=1)
    #: Exponential backoff with full jitter: up to base * 2^retry, capped.
    backoff_base_ms: float = Field(25.0, ge=0)
    backoff_max_ms: float = Field(1000.0, ge=0)
    #: Process-wide: retries may add at most this share of calls (Envoy's retry budget) ...
    budget_ratio: float = Field(0.2, ge=0, le=1)
    #: ... plus this many retries per second, so a quiet gateway can still retry.
    budget_min_per_second: float = Field(5.0, ge=0)


class CircuitBreakerSettings(_Strict):
    #: Open after this many failures in a row ...
    consecutive_failures: int = Field(5, ge=1)
    #: ... or when this share of the calls in the window failed ...
    failure_rate: float = Field(0.5, gt=0, le=1)
    #: ... once the window holds at least this many calls.
    min_calls: int = Field(20, ge=1)
    window_seconds: float = Field(30.0, gt=0)
    #: Cool-down before letting probes through (half-open).
    open_seconds: float = Field(15.0, gt=0)
    #: Probe calls allowed at once while half-open; a success closes the circuit.
    half_open_probes: int = Field(1, ge=1)


class ConcurrencySettings(_Strict):
    #: Default calls in flight per deployment.
    max_in_flight: int = Field(1000, gt=0)
    #: Default calls waiting for a slot per deployment; beyond: RESOURCE_EXHAUSTED.
    max_queue: int = Field(1024, ge=0)


class ResilienceSettings(_Strict):
    retries: RetrySettings = Field(default_factory=RetrySettings)
    circuit_breaker: CircuitBreakerSettings = Field(default_factory=CircuitBreakerSettings)
    concurrency: ConcurrencySettings = Field(default_factory=ConcurrencySettings)


class RequestLimits(_Strict):
    """What one request may ask; above these a call is refused before any upstream call."""

    max_request_bytes: int = Field(1024 * 1024, gt=0)
    max_messages: int = Field(1024, gt=0)
    max_tools: int = Field(128, gt=0)
    max_stop_sequences: int = Field(4, gt=0)
    max_metadata_entries: int = Field(64, ge=0)


class MetricsSettings(_Strict):
    """Prometheus `/metrics`, served over HTTP on its own port (not the gRPC one)."""

    enabled: bool = True
    #: HOST:PORT of the metrics endpoint (`--metrics-listen` overrides).
    listen: str = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _listen_parses(cls, listen: str) -> str:
        split_host_port(listen)
        return listen


class TracingSettings(_Strict):
    """OpenTelemetry traces. `none` installs no instrumentation at all (it costs ~40% RPS)."""

    exporter: Literal["none", "console", "otlp"] = "none"
    #: OTLP over HTTP (protobuf): the collector's traces URL.
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    #: Share of new traces sampled; a caller's `traceparent` decides for its own traces.
    sample_ratio: float = Field(1.0, ge=0, le=1)
    #: The `service.name` resource attribute.
    service_name: str = Field("ai-service", min_length=1)
    #: Who makes each call's server span: `gateway` (the telemetry interceptor that
    #: already sees every call) or `opentelemetry-grpc` (the OTel grpc aio
    #: instrumentation, an extra interceptor that costs far more per call, sampled or
    #: not: bench section 4).
    server_spans: Literal["gateway", "opentelemetry-grpc"] = "gateway"


class AuditSettings(_Strict):
    """An append-only JSON-lines record per call; off while `path` is unset."""

    path: str | None = None
    #: Rotate when the file would grow past this many bytes; 0 never rotates.
    max_bytes: int = Field(100 * 1024 * 1024, ge=0)
    #: Rotated files kept (`audit.jsonl.1` …); older ones are deleted.
    backup_count: int = Field(5, ge=0)
    #: Also record the prompt and the answer, after redaction (see `redaction`).
    include_prompts: bool = False


class ObservabilitySettings(_Strict):
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)


RedactionMode = Literal["off", "redact", "block", "log-only"]
BuiltinDetector = Literal["email", "phone", "credit_card", "ssn", "ip", "iban", "secret"]


class CustomDetector(_Strict):
    """A user pattern: matches are redacted as `[REDACTED:<NAME>]`."""

    name: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    pattern: str = Field(min_length=1)

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern


class RedactionSettings(_Strict):
    """PII detection on prompts (and optionally answers), per model or per key."""

    detectors: tuple[BuiltinDetector, ...] = (
        "email",
        "phone",
        "credit_card",
        "ssn",
        "ip",
        "iban",
        "secret",
    )
    custom: tuple[CustomDetector, ...] = ()
    #: For every call: `off`, `redact` (before the upstream sees it), `block`
    #: (FAILED_PRECONDITION) or `log-only` (redact only in the audit log).
    mode: RedactionMode = "off"
    #: Per public model; a key's mode (below) wins over its model's.
    models: dict[str, RedactionMode] = Field(default_factory=dict)
    #: Per caller key name.
    keys: dict[str, RedactionMode] = Field(default_factory=dict)
    #: Also redact answers (unary and streamed) of calls in `redact` or `block` mode.
    answers: bool = False
    #: Streamed answers hold back this many characters so a match split across
    #: chunks is still caught; the longest entity caught whole across chunks.
    stream_window_chars: int = Field(64, ge=1)


class GatewayConfig(_Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    resilience: ResilienceSettings = Field(default_factory=ResilienceSettings)
    shared_state: SharedStateSettings = Field(default_factory=SharedStateSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    providers: tuple[ProviderSettings, ...] = Field(min_length=1)
    models: tuple[ModelSettings, ...] = Field(min_length=1)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    #: Proxy and TLS towards upstreams: every provider's defaults.
    egress: EgressSettings = Field(default_factory=EgressSettings)

    @model_validator(mode="after")
    def _references_resolve(self) -> GatewayConfig:
        _require_unique("providers", [p.name for p in self.providers])
        _require_unique("models", [m.name for m in self.models])
        _require_unique("auth.keys", [k.name for k in self.auth.keys])
        _require_distinct_secrets(self.auth.keys)
        providers = {p.name for p in self.providers}
        models = {m.name for m in self.models}
        for i, model in enumerate(self.models):
            _check_model_references(f"models[{i}]", model, providers, models)
        deployment_limits(self.models)  # refuses two limits for one deployment
        for i, key in enumerate(self.auth.keys):
            for name in key.models:
                if name not in models:
                    raise ValueError(f"auth.keys[{i}].models: unknown model {name!r}")
        if self.auth.enabled and not self.auth.keys:
            raise ValueError("auth.keys: auth is enabled but no key is configured")
        exposed = not is_loopback(self.server.host)
        explicitly_allowed = self.server.tls is not None and self.server.allow_demo_key_off_loopback
        if any(k.is_demo for k in self.auth.keys) and exposed and not explicitly_allowed:
            raise ValueError(
                f"server.listen: the demo key is enabled, so only a loopback address may be "
                f"bound, not {self.server.host!r}; remove the demo key to listen publicly "
                f"(or, with server.tls, set server.allow_demo_key_off_loopback)"
            )
        return self

    @model_validator(mode="after")
    def _redaction_names_resolve(self) -> GatewayConfig:
        models = {m.name for m in self.models}
        for name in self.redaction.models:
            if name not in models:
                raise ValueError(f"redaction.models: unknown model {name!r}")
        keys = {k.name for k in self.auth.keys}
        for name in self.redaction.keys:
            if name not in keys:
                raise ValueError(f"redaction.keys: unknown key {name!r}")
        return self

    @model_validator(mode="after")
    def _egress_resolves(self, info: ValidationInfo) -> GatewayConfig:
        """Each provider's egress, defaults filled in and its proxy decided (from the
        environment given to `parse_config`, if trust_env)."""
        env = info.context.get("env") if isinstance(info.context, dict) else None
        providers = []
        for i, provider in enumerate(self.providers):
            path = f"providers[{i}].egress"
            own = provider.egress
            if (own.tls.trust_set or own.tls.identity_set) and provider.base_url.startswith(
                "http://"
            ):
                raise ValueError(f"{path}.tls: base_url is http://, where no TLS is used")
            try:
                egress = effective_egress(own, self.egress, provider.base_url, env)
            except ValueError as exc:
                raise ValueError(f"{path}.proxy: {exc}") from None
            providers.append(provider.model_copy(update={"egress": egress}))
        return self.model_copy(update={"providers": tuple(providers)})


def _require_distinct_secrets(keys: Sequence[CallerKey]) -> None:
    # A key is looked up by its digest: two entries with one secret would leave one of
    # them (and its restrictions) silently unused.
    first: dict[bytes, str] = {}
    for i, key in enumerate(keys):
        seen = first.setdefault(key.digest, key.name)
        if seen != key.name:
            raise ValueError(
                f"auth.keys[{i}]: key {key.name!r} has the same secret as key {seen!r}; "
                f"each key needs its own"
            )


def deployment_limits(
    models: Sequence[ModelSettings],
) -> dict[tuple[str, str], tuple[int | None, int | None]]:
    """Each deployment (provider, upstream model) → its max_concurrency and max_queue,
    from whichever model sets them (None: the resilience defaults). Models may share a
    deployment, which has one limit: two models setting two values are refused."""
    limits: dict[tuple[str, str], tuple[int | None, int | None]] = {}
    for i, model in enumerate(models):
        for j, target in enumerate(model.targets):
            key = (target.provider, target.upstream_model)
            known = limits.get(key, (None, None))
            merged = []
            for name, have, wanted in zip(
                ("max_concurrency", "max_queue"),
                known,
                (target.max_concurrency, target.max_queue),
                strict=True,
            ):
                if have is not None and wanted is not None and have != wanted:
                    raise ValueError(
                        f"models[{i}].deployments[{j}].{name}: {target.provider}/"
                        f"{target.upstream_model} is another model's deployment too, with "
                        f"{name} {have}; a deployment has one limit"
                    )
                merged.append(wanted if wanted is not None else have)
            limits[key] = (merged[0], merged[1])
    return limits


def _check_model_references(
    path: str, model: ModelSettings, providers: set[str], models: set[str]
) -> None:
    if model.provider is not None and model.provider not in providers:
        raise ValueError(f"{path}.provider: unknown provider {model.provider!r}")
    for j, deployment in enumerate(model.deployments):
        if deployment.provider not in providers:
            raise ValueError(
                f"{path}.deployments[{j}].provider: unknown provider {deployment.provider!r}"
            )
    for j, fallback in enumerate(model.fallbacks):
        if fallback not in models:
            raise ValueError(f"{path}.fallbacks[{j}]: unknown model {fallback!r}")
    for j, rule in enumerate(model.rules):
        if rule.model not in models:
            raise ValueError(f"{path}.rules[{j}].model: unknown model {rule.model!r}")


def _require_unique(path: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(f"{path}[{i}].name: duplicate name {name!r}")
        seen.add(name)


def split_host_port(address: str) -> tuple[str, int]:
    """'127.0.0.1:50051' / '[::1]:50051' / 'localhost:0' → (host, port)."""
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\]:(?P<p6>\d+)|(?P<host>[^:\[\]]+):(?P<port>\d+)", address
    )
    if not match:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    host = match["v6"] or match["host"]
    port = int(match["p6"] or match["port"])
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def interpolate_env(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace `${NAME}` and `${NAME:-default}` in every string of a parsed YAML tree."""
    if isinstance(value, dict):
        return {k: interpolate_env(v, env, _join(path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_env(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set")

    return _ENV_REF.sub(substitute, value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse_config(raw: Any, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate a parsed YAML tree into a GatewayConfig, or raise ConfigError naming the field."""
    if not isinstance(raw, dict):
        raise ConfigError("<root>: the configuration must be a mapping")
    _refuse_literal_provider_keys(raw)
    env = os.environ if env is None else env
    tree = interpolate_env(raw, env)
    try:
        # The environment also decides the providers' proxies (egress.trust_env).
        return GatewayConfig.model_validate(tree, context={"env": env})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def with_sections(config: GatewayConfig, sections: Mapping[str, Any]) -> GatewayConfig:
    """`config` with whole top-level sections replaced, checked again as a whole (a
    reload keeps the running `server` section, and the two must still agree)."""
    fields = {name: getattr(config, name) for name in GatewayConfig.model_fields}
    try:
        return GatewayConfig.model_validate({**fields, **sections})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


_WHOLE_ENV_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")


def _refuse_literal_provider_keys(raw: dict[str, Any]) -> None:
    """A provider key written into the file would be one leaked file away from misuse."""
    providers = raw.get("providers")
    for i, provider in enumerate(providers if isinstance(providers, list) else ()):
        key = provider.get("api_key") if isinstance(provider, dict) else None
        if isinstance(key, str) and not _WHOLE_ENV_REF.fullmatch(key):
            raise ConfigError(
                f"providers[{i}].api_key: give the key as an environment variable "
                f"(${{NAME}}) or with api_key_file, not written into the config"
            )


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    return parse_config(raw, env)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's quote of the line: that line may hold
    a caller key, and this message is logged."""
    if not isinstance(error, yaml.MarkedYAMLError):
        # A ReaderError names a bad character by its code and position: no file text.
        return " ".join(str(error).split())
    parts = [
        f"{text} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else text
        for text, mark in (
            (error.context, error.context_mark),
            (error.problem, error.problem_mark),
        )
        if text
    ]
    return ", ".join(parts)


def with_listen(config: GatewayConfig, listen: str) -> GatewayConfig:
    """`config` listening on `listen` instead, validated again (the demo-key rule depends on it)."""
    # Only the changed section goes back as a dict: the rest stay validated objects, so
    # nothing is read again (a provider's api_key_file, once read, is beside its api_key).
    return with_sections(config, {"server": {**config.server.model_dump(), "listen": listen}})


def with_metrics_listen(config: GatewayConfig, listen: str) -> GatewayConfig:
    """`config` serving /metrics on `listen` instead (`--metrics-listen`)."""
    observability = config.observability.model_dump()
    observability["metrics"].update(enabled=True, listen=listen)
    return with_sections(config, {"observability": observability})


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        location = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
        ).lstrip(".")
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{location}: {message}" if location else message)
    return "; ".join(lines)


def embedded_default(simulator_base_url: str, listen: str = "127.0.0.1:50051") -> GatewayConfig:
    """What `python -m server` runs with no config: the built-in simulator and the demo key."""
    return parse_config(
        {
            "server": {"listen": listen},
            "auth": {"keys": [{"name": "demo", "key": DEMO_KEY}]},
            # One model per provider kind, all on the built-in simulator, which speaks
            # each wire format at its own path.
            "providers": [
                {"name": "simulator", "kind": "openai", "base_url": f"{simulator_base_url}/v1"},
                {
                    "name": "simulator-anthropic",
                    "kind": "anthropic",
                    "base_url": simulator_base_url,
                },
                {"name": "simulator-ollama", "kind": "ollama", "base_url": simulator_base_url},
            ],
            "models": [
                {"name": "sim-gpt", "provider": "simulator", "upstream_model": "sim-gpt-1"},
                {
                    "name": "sim-claude",
                    "provider": "simulator-anthropic",
                    "upstream_model": "sim-claude-1",
                },
                {
                    "name": "sim-llama",
                    "provider": "simulator-ollama",
                    "upstream_model": "sim-llama-1",
                },
            ],
        },
        env={},
    )

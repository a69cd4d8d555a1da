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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

DEMO_KEY = "demo-key"
CONFIG_ENV_VAR = "AI_SERVICE_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the field."""


class _Strict(BaseModel):
    # Unknown keys are typos until proven otherwise.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    listen: str = "127.0.0.1:50051"
    #: How long in-flight calls and streams may run on after SIGTERM.
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    #: The deadline of a call whose client set none.
    default_deadline_seconds: float = Field(300.0, gt=0)
    #: Largest request message gRPC accepts; requests above limits.max_request_bytes
    #: but below this get a clear INVALID_ARGUMENT instead of a transport error.
    max_receive_message_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_send_message_bytes: int = Field(8 * 1024 * 1024, gt=0)

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
        return self.key is not None and self.key.get_secret_value() == DEMO_KEY


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
    max_connections: int = Field(100, gt=0)
    max_keepalive_connections: int = Field(100, ge=0)
    keepalive_expiry_seconds: float = Field(30.0, ge=0)


class ProviderSettings(_Strict):
    """One upstream API endpoint, reached through one shared connection pool."""

    name: str = Field(min_length=1)
    kind: Literal["openai"] = "openai"
    #: For kind openai: the base that `/chat/completions` is appended to, e.g. https://api.openai.com/v1
    base_url: str
    api_key: SecretStr | None = None
    #: Extra headers sent upstream on every call (e.g. an organisation id).
    headers: dict[str, str] = Field(default_factory=dict)
    #: The HTTP client library behind the seam; see server/providers/http.py for the numbers.
    http_client: Literal["aiohttp", "httpx2", "httpx"] = "aiohttp"
    timeouts: Timeouts = Field(default_factory=Timeouts)
    pool: PoolSettings = Field(default_factory=PoolSettings)

    @model_validator(mode="after")
    def _base_url_is_http(self) -> ProviderSettings:
        if not re.match(r"https?://[^/\s]+", self.base_url):
            raise ValueError("base_url must start with http:// or https:// and name a host")
        return self


class ModelSettings(_Strict):
    """A public model name and the upstream that serves it."""

    name: str = Field(min_length=1)
    provider: str
    #: The model name the upstream API expects.
    upstream_model: str = Field(min_length=1)
    #: Upper bound on max_tokens a caller may ask of this model.
    max_output_tokens: int | None = Field(None, gt=0)


class RequestLimits(_Strict):
    """What one request may ask; above these a call is refused before any upstream call."""

    max_request_bytes: int = Field(1024 * 1024, gt=0)
    max_messages: int = Field(1024, gt=0)
    max_tools: int = Field(128, gt=0)
    max_stop_sequences: int = Field(4, gt=0)
    max_metadata_entries: int = Field(64, ge=0)


class GatewayConfig(_Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    providers: tuple[ProviderSettings, ...] = Field(min_length=1)
    models: tuple[ModelSettings, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _references_resolve(self) -> GatewayConfig:
        _require_unique("providers", [p.name for p in self.providers])
        _require_unique("models", [m.name for m in self.models])
        _require_unique("auth.keys", [k.name for k in self.auth.keys])
        providers = {p.name for p in self.providers}
        models = {m.name for m in self.models}
        for i, model in enumerate(self.models):
            if model.provider not in providers:
                raise ValueError(f"models[{i}].provider: unknown provider {model.provider!r}")
        for i, key in enumerate(self.auth.keys):
            for name in key.models:
                if name not in models:
                    raise ValueError(f"auth.keys[{i}].models: unknown model {name!r}")
        if self.auth.enabled and not self.auth.keys:
            raise ValueError("auth.keys: auth is enabled but no key is configured")
        if any(k.is_demo for k in self.auth.keys) and not is_loopback(self.server.host):
            raise ValueError(
                f"server.listen: the demo key is enabled, so only a loopback address may be "
                f"bound, not {self.server.host!r}; remove the demo key to listen publicly"
            )
        return self


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
    tree = interpolate_env(raw, os.environ if env is None else env)
    try:
        return GatewayConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, env)


def with_listen(config: GatewayConfig, listen: str) -> GatewayConfig:
    """`config` listening on `listen` instead, validated again (the demo-key rule depends on it)."""
    tree = config.model_dump()
    tree["server"]["listen"] = listen
    try:
        return GatewayConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


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
            "providers": [
                {"name": "simulator", "kind": "openai", "base_url": f"{simulator_base_url}/v1"}
            ],
            "models": [
                {"name": "sim-gpt", "provider": "simulator", "upstream_model": "sim-gpt-1"},
            ],
        },
        env={},
    )

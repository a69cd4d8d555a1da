"""Command-line overrides applied to a loaded config (`--listen`, `--http-listen`,
`--metrics-listen`)."""

from __future__ import annotations

from ai_service.config.gateway import GatewayConfig
from ai_service.config.loading import with_sections


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


def with_http_listen(config: GatewayConfig, listen: str) -> GatewayConfig:
    """`config` serving the HTTP door on `listen` (`--http-listen`), validated again."""
    server = config.server.model_dump()
    server["http"]["listen"] = listen
    return with_sections(config, {"server": server})

"""The gateway's configuration: one typed object, validated once at start.

Loaded from YAML with `${ENV}` / `${ENV:-default}` interpolation (so provider keys stay
out of the file); every error names the path of the bad field, e.g.
`models[2].provider: unknown provider 'opneai'`. Nothing else in the gateway reads the
environment. One module per part of the file (`server`, `callers`, `providers`, `models`,
…), `loading` for files and the environment, `embedded` for the no-config default.
"""

from __future__ import annotations

from ai_service.config.base import ConfigError, StrictSettings
from ai_service.config.callers import DEMO_KEY, AuthSettings, CallerKey, RateLimitSettings
from ai_service.config.cost import CostSettings, PriceSettings, deployment_prices
from ai_service.config.egress import DIRECT, EgressSettings, UpstreamTLSSettings, proxy_address
from ai_service.config.embedded import embedded_default
from ai_service.config.gateway import GatewayConfig
from ai_service.config.grants import (
    BudgetSettings,
    CallerGrants,
    Grants,
    RoleSettings,
    TeamSettings,
)
from ai_service.config.http_door import EMBEDDED_HTTP_LISTEN, HttpDoorSettings
from ai_service.config.identity import (
    CertificateIdentity,
    ClaimNames,
    JwtSettings,
    VirtualKeySettings,
)
from ai_service.config.loading import (
    CONFIG_ENV_VAR,
    interpolate_env,
    load_config,
    parse_config,
    with_sections,
)
from ai_service.config.media import MediaFetchSettings
from ai_service.config.models import (
    Capabilities,
    DeploymentSettings,
    ModelSettings,
    RoutingRule,
    deployment_limits,
)
from ai_service.config.network import is_loopback, split_host_port
from ai_service.config.observability import (
    AccessLogSettings,
    AuditSettings,
    MetricsSettings,
    ObservabilitySettings,
    TracingSettings,
)
from ai_service.config.overrides import with_http_listen, with_listen, with_metrics_listen
from ai_service.config.policy import (
    BuiltinDetector,
    CustomDetector,
    RedactionMode,
    RedactionSettings,
    RequestLimits,
)
from ai_service.config.providers import PoolSettings, ProviderSettings, Timeouts
from ai_service.config.resilience import (
    CircuitBreakerSettings,
    ConcurrencySettings,
    ResilienceSettings,
    RetrySettings,
)
from ai_service.config.server import ServerSettings, TLSSettings
from ai_service.config.services import ADMIN_SERVICE_NAME, HEALTH_SERVICE_NAME, SERVICE_NAME
from ai_service.config.state import CacheSettings, SharedStateSettings

__all__ = [
    "ADMIN_SERVICE_NAME",
    "CONFIG_ENV_VAR",
    "DEMO_KEY",
    "DIRECT",
    "EMBEDDED_HTTP_LISTEN",
    "HEALTH_SERVICE_NAME",
    "SERVICE_NAME",
    "AccessLogSettings",
    "AuditSettings",
    "AuthSettings",
    "BudgetSettings",
    "BuiltinDetector",
    "CacheSettings",
    "CallerGrants",
    "CallerKey",
    "Capabilities",
    "CertificateIdentity",
    "CircuitBreakerSettings",
    "ClaimNames",
    "ConcurrencySettings",
    "ConfigError",
    "CostSettings",
    "CustomDetector",
    "DeploymentSettings",
    "EgressSettings",
    "GatewayConfig",
    "Grants",
    "HttpDoorSettings",
    "JwtSettings",
    "MediaFetchSettings",
    "MetricsSettings",
    "ModelSettings",
    "ObservabilitySettings",
    "PoolSettings",
    "PriceSettings",
    "ProviderSettings",
    "RateLimitSettings",
    "RedactionMode",
    "RedactionSettings",
    "RequestLimits",
    "ResilienceSettings",
    "RetrySettings",
    "RoleSettings",
    "RoutingRule",
    "ServerSettings",
    "SharedStateSettings",
    "StrictSettings",
    "TLSSettings",
    "TeamSettings",
    "Timeouts",
    "TracingSettings",
    "UpstreamTLSSettings",
    "VirtualKeySettings",
    "deployment_limits",
    "deployment_prices",
    "embedded_default",
    "interpolate_env",
    "is_loopback",
    "load_config",
    "parse_config",
    "proxy_address",
    "split_host_port",
    "with_http_listen",
    "with_listen",
    "with_metrics_listen",
    "with_sections",
]

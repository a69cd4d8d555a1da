"""The whole configuration, and the checks that span its sections."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, ValidationInfo, model_validator

from ai_service.config.base import StrictSettings
from ai_service.config.callers import AuthSettings, CallerKey, RateLimitSettings
from ai_service.config.cost import CostSettings, deployment_prices
from ai_service.config.egress import EgressSettings, effective_egress
from ai_service.config.grants import CallerGrants, Grants
from ai_service.config.media import MediaFetchSettings
from ai_service.config.models import ModelSettings, deployment_limits
from ai_service.config.network import is_loopback, split_host_port
from ai_service.config.observability import ObservabilitySettings
from ai_service.config.policy import RedactionSettings, RequestLimits
from ai_service.config.providers import ProviderSettings
from ai_service.config.resilience import ResilienceSettings
from ai_service.config.server import ServerSettings
from ai_service.config.state import CacheSettings, SharedStateSettings


class GatewayConfig(StrictSettings):
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
    media_fetch: MediaFetchSettings = Field(default_factory=MediaFetchSettings)
    #: Prices, currency and spend history (budgets are on keys, roles and teams).
    cost: CostSettings = Field(default_factory=CostSettings)

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
        deployment_prices(self.models, self.cost.prices)  # and two prices, or a stray one
        _check_identities(self.auth, models, has_client_ca=self._has_client_ca)
        if self.auth.enabled and not self.auth.has_identity_source:
            raise ValueError("auth.keys: auth is enabled but no key is configured")
        exposed = not is_loopback(self.server.host)
        explicitly_allowed = self.server.tls is not None and self.server.allow_demo_key_off_loopback
        if any(k.is_demo for k in self.auth.keys) and exposed and not explicitly_allowed:
            raise ValueError(
                f"server.listen: the demo key is enabled, so only a loopback address may be "
                f"bound, not {self.server.host!r}; remove the demo key to listen publicly "
                f"(or, with server.tls, set server.allow_demo_key_off_loopback)"
            )
        _check_http_door(self)
        return self

    @model_validator(mode="after")
    def _redaction_names_resolve(self) -> GatewayConfig:
        models = {m.name for m in self.models}
        for name in self.redaction.models:
            if name not in models:
                raise ValueError(f"redaction.models: unknown model {name!r}")
        keys = {k.name for k in self.auth.keys} | {c.name for c in self.auth.certificates}
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
        auth = self.auth
        if auth.jwt is not None:
            # The identity provider is reached like an upstream: the same proxy and CAs.
            try:
                egress = effective_egress(auth.jwt.egress, self.egress, auth.jwt.jwks_url, env)
            except ValueError as exc:
                raise ValueError(f"auth.jwt.egress.proxy: {exc}") from None
            jwt = auth.jwt.model_copy(update={"egress": egress})
            auth = auth.model_copy(update={"jwt": jwt})
        return self.model_copy(update={"providers": tuple(providers), "auth": auth})

    @property
    def _has_client_ca(self) -> bool:
        return self.server.tls is not None and self.server.tls.client_ca_file is not None


def _check_http_door(config: GatewayConfig) -> None:
    """The HTTP door serves plaintext: never off loopback with the demo key, nor beside a
    gRPC listener that TLS protects (its keys would cross the network in the clear)."""
    server = config.server
    listen = server.http.listen
    if listen is None:
        return
    if listen == server.listen and split_host_port(listen)[1] != 0:
        raise ValueError("server.http.listen: is server.listen; each needs its own port")
    host = split_host_port(listen)[0]
    if is_loopback(host):
        return
    if any(k.is_demo for k in config.auth.keys):
        raise ValueError(
            f"server.http.listen: the demo key is enabled, so only a loopback address may be "
            f"bound, not {host!r}; remove the demo key to serve the HTTP door publicly"
        )
    if server.tls is not None:
        raise ValueError(
            f"server.http.listen: the HTTP door serves plaintext, and server.tls protects the "
            f"gRPC listener: bind it to loopback (behind a TLS-terminating proxy), not {host!r}"
        )


def _check_identities(auth: AuthSettings, models: set[str], *, has_client_ca: bool) -> None:
    """Roles, certificates and tokens name only roles and models that exist."""
    _require_unique("auth.roles", [r.name for r in auth.roles])
    _require_unique("auth.certificates", [c.name for c in auth.certificates])
    _require_unique("auth.teams", [t.name for t in auth.teams])
    roles = {r.name for r in auth.roles}
    for i, role in enumerate(auth.roles):
        _check_grants(f"auth.roles[{i}]", role, models, roles)
    for i, key in enumerate(auth.keys):
        _check_grants(f"auth.keys[{i}]", key, models, roles)
    for i, certificate in enumerate(auth.certificates):
        _check_grants(f"auth.certificates[{i}]", certificate, models, roles)
    if auth.certificates and not has_client_ca:
        raise ValueError(
            "auth.certificates: client certificates need mutual TLS (server.tls.client_ca_file)"
        )
    matched: dict[tuple[str, str], str] = {}
    for i, certificate in enumerate(auth.certificates):
        for match in certificate.matches:
            seen = matched.setdefault(match, certificate.name)
            if seen != certificate.name:
                raise ValueError(
                    f"auth.certificates[{i}].{match[0]}: {match[1]!r} already identifies {seen!r}"
                )
    if auth.jwt is not None and auth.jwt.default_role not in (None, *roles):
        raise ValueError(f"auth.jwt.default_role: unknown role {auth.jwt.default_role!r}")


def _check_grants(path: str, grants: Grants, models: set[str], roles: set[str]) -> None:
    for name in grants.models:
        if name not in models:
            raise ValueError(f"{path}.models: unknown model {name!r}")
    if isinstance(grants, CallerGrants):
        for role in grants.roles:
            if role not in roles:
                raise ValueError(f"{path}.roles: unknown role {role!r}")


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

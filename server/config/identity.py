"""Identity sources beside the configured keys: the company's tokens (JWT), client
certificates, and keys issued at runtime."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ai_service.config.base import StrictSettings
from ai_service.config.egress import EgressSettings
from ai_service.config.grants import CallerGrants
from ai_service.config.network import is_loopback

#: Asymmetric algorithms only: a token is checked with the identity provider's public
#: keys, so no HMAC (`HS256`: a public key taken for a shared secret) and never `none`.
JwtAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]


class ClaimNames(StrictSettings):
    """Which claims of a token say who the caller is and what it may do."""

    #: The caller's name (logs, metrics, audit, limits).
    name: str = Field("sub", min_length=1)
    #: The caller's team; unset: no team.
    team: str | None = Field(None, min_length=1)
    #: The caller's roles (a list, or a space-separated string); names not in
    #: `auth.roles` are ignored.
    roles: str | None = Field("roles", min_length=1)
    #: The models the caller may use (a list, or a space-separated string); unset:
    #: from its role.
    models: str | None = Field(None, min_length=1)


class JwtSettings(StrictSettings):
    """Bearer tokens from the identity provider, verified here against its published keys."""

    #: Where the identity provider publishes its public keys (a JWK Set); https://, or
    #: http:// on a loopback address. Fetched through `egress` (the proxy and CAs).
    jwks_url: str
    #: The `iss` every token must carry.
    issuer: str = Field(min_length=1)
    #: The `aud` a token must carry (one of them, when several are given).
    audience: tuple[str, ...] = Field(min_length=1)
    algorithms: tuple[JwtAlgorithm, ...] = Field(("RS256", "ES256", "EdDSA"), min_length=1)
    #: Clock skew allowed on `exp`, `nbf` and `iat`.
    leeway_seconds: float = Field(30.0, ge=0, le=300)
    claims: ClaimNames = Field(default_factory=ClaimNames)
    #: The role of a token that holds none of `auth.roles`; unset: the defaults.
    default_role: str | None = Field(None, min_length=1)
    #: A token signed with a key id the cached key set lacks makes the gateway fetch the
    #: set again, at most once per this interval (forged key ids cannot make it hammer
    #: the identity provider); an unreachable provider is logged once per interval too.
    refresh_interval_seconds: float = Field(60.0, ge=1)
    #: The key set is fetched again in the background once it is this old.
    max_age_seconds: float = Field(3600.0, gt=0)
    #: The longest a fetch of the key set may take.
    fetch_timeout_seconds: float = Field(5.0, gt=0)
    #: Verified tokens kept (until they expire), so a repeated token costs a lookup
    #: (a token is about a kilobyte: 10,000 hold some 10-20 MB).
    max_cached_tokens: int = Field(10_000, gt=0)
    #: Proxy and TLS towards the identity provider, over the top-level `egress`.
    egress: EgressSettings = Field(default_factory=EgressSettings)

    @field_validator("audience", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("jwks_url")
    @classmethod
    def _https(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an https:// URL")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError("must be https:// (http:// is only allowed on a loopback address)")
        return url


class CertificateIdentity(CallerGrants):
    """A client certificate (mutual TLS) that identifies a caller: matched by exactly one
    of its subject's common name or a subjectAltName entry."""

    #: The caller's name (logs, metrics, audit, limits).
    name: str = Field(min_length=1)
    subject_cn: str | None = Field(None, min_length=1)
    #: A DNS name in the subjectAltName.
    san_dns: str | None = Field(None, min_length=1)
    #: A URI in the subjectAltName, e.g. a SPIFFE id `spiffe://example.org/ns/app/sa/api`.
    san_uri: str | None = Field(None, min_length=1)
    #: An e-mail address in the subjectAltName.
    san_email: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_match(self) -> CertificateIdentity:
        if len(self.matches) != 1:
            raise ValueError("give exactly one of subject_cn, san_dns, san_uri or san_email")
        return self

    @property
    def matches(self) -> list[tuple[str, str]]:
        """(field, value) pairs this entry matches on."""
        fields = (
            ("subject_cn", self.subject_cn),
            ("san_dns", self.san_dns),
            ("san_uri", self.san_uri),
            ("san_email", self.san_email),
        )
        return [(field, value) for field, value in fields if value is not None]


class VirtualKeySettings(StrictSettings):
    """Keys issued, changed and revoked at runtime through the Admin service, stored as
    digests in the shared state (memory for one process, Redis for many)."""

    enabled: bool = False
    #: With Redis, how often each process checks whether any key changed (one small
    #: Redis read, whatever the traffic): a revoked key stops working everywhere within
    #: this interval plus `shared_state.timeout_ms`.
    poll_interval_seconds: float = Field(0.25, gt=0, le=0.9)
    #: Lookups of keys no process knows that are remembered (until the next change).
    max_cached_misses: int = Field(10_000, gt=0)

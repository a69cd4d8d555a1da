"""Who may call: caller keys, the demo key, and the default rate limits."""

from __future__ import annotations

import hashlib
import re

from pydantic import Field, SecretStr, field_validator, model_validator

from ai_service.config.base import StrictSettings
from ai_service.config.grants import CallerGrants, RateLimitSettings, RoleSettings, TeamSettings
from ai_service.config.identity import CertificateIdentity, JwtSettings, VirtualKeySettings

__all__ = ["DEMO_KEY", "AuthSettings", "CallerKey", "RateLimitSettings"]

DEMO_KEY = "demo-key"

_DEMO_DIGEST = hashlib.sha256(DEMO_KEY.encode()).digest()

#: A caller key shorter than this, or with fewer distinct characters, is refused at
#: load: such a key can be guessed (16 random characters of base64 are 96 bits).
MIN_KEY_CHARS = 16
MIN_KEY_DISTINCT_CHARS = 8


class CallerKey(CallerGrants):
    """One caller credential: a name (what logs and metrics show) and the secret or its hash."""

    name: str = Field(min_length=1)
    #: The key itself (usually `${ENV}`); or give `key_sha256` and keep the file harmless.
    key: SecretStr | None = None
    #: `sha256:<hex>` of the key.
    key_sha256: str | None = None

    @field_validator("key")
    @classmethod
    def _strong_enough(cls, key: SecretStr | None) -> SecretStr | None:
        # An empty key is the model check's to report (its variable is unset); the demo
        # key is allowed on loopback only, which the gateway's own check enforces.
        value = key.get_secret_value() if key is not None else ""
        if not value or hashlib.sha256(value.encode()).digest() == _DEMO_DIGEST:
            return key
        hint = "use a random one, e.g. `openssl rand -hex 16`"
        if len(value) < MIN_KEY_CHARS:
            raise ValueError(
                f"too short: {len(value)} characters, at least {MIN_KEY_CHARS} needed; {hint}"
            )
        if len(set(value)) < MIN_KEY_DISTINCT_CHARS:
            raise ValueError(
                f"too little variety: {len(set(value))} distinct characters, at least "
                f"{MIN_KEY_DISTINCT_CHARS} needed; {hint}"
            )
        return key

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


class AuthSettings(StrictSettings):
    #: Off only for local experiments: every call is then accepted as 'anonymous'.
    enabled: bool = True
    keys: tuple[CallerKey, ...] = ()
    #: Failed authentications one client address may make per minute, sustained; past
    #: them (and the burst) its failing calls get RESOURCE_EXHAUSTED with RetryInfo. A
    #: valid key always passes. 0 switches the throttle off.
    failed_attempts_per_minute: int = Field(60, ge=0)
    failed_attempts_burst: int = Field(20, gt=0)
    #: Named grants that keys, certificates and tokens refer to (first listed, first taken).
    roles: tuple[RoleSettings, ...] = ()
    #: Teams with a budget of their own, which every member's spend counts against.
    teams: tuple[TeamSettings, ...] = ()
    #: Bearer tokens (JWT) from the company's identity provider, checked against its JWKS.
    jwt: JwtSettings | None = None
    #: With mutual TLS: client certificates that identify a caller without a secret.
    certificates: tuple[CertificateIdentity, ...] = ()
    #: Keys issued and revoked at runtime through the Admin service.
    virtual_keys: VirtualKeySettings = Field(default_factory=VirtualKeySettings)

    @property
    def has_identity_source(self) -> bool:
        return bool(self.keys or self.jwt or self.certificates or self.virtual_keys.enabled)

"""Who may call: caller keys, the demo key, and the default rate limits."""

from __future__ import annotations

import hashlib
import re

from pydantic import Field, SecretStr, model_validator

from ai_service.config.base import StrictSettings
from ai_service.config.grants import CallerGrants, RateLimitSettings, RoleSettings
from ai_service.config.identity import CertificateIdentity, JwtSettings, VirtualKeySettings

__all__ = ["DEMO_KEY", "AuthSettings", "CallerKey", "RateLimitSettings"]

DEMO_KEY = "demo-key"

_DEMO_DIGEST = hashlib.sha256(DEMO_KEY.encode()).digest()


class CallerKey(CallerGrants):
    """One caller credential: a name (what logs and metrics show) and the secret or its hash."""

    name: str = Field(min_length=1)
    #: The key itself (usually `${ENV}`); or give `key_sha256` and keep the file harmless.
    key: SecretStr | None = None
    #: `sha256:<hex>` of the key.
    key_sha256: str | None = None

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
    #: Named grants that keys, certificates and tokens refer to (first listed, first taken).
    roles: tuple[RoleSettings, ...] = ()
    #: Bearer tokens (JWT) from the company's identity provider, checked against its JWKS.
    jwt: JwtSettings | None = None
    #: With mutual TLS: client certificates that identify a caller without a secret.
    certificates: tuple[CertificateIdentity, ...] = ()
    #: Keys issued and revoked at runtime through the Admin service.
    virtual_keys: VirtualKeySettings = Field(default_factory=VirtualKeySettings)

    @property
    def has_identity_source(self) -> bool:
        return bool(self.keys or self.jwt or self.certificates or self.virtual_keys.enabled)

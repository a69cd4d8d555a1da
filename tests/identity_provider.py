"""A local identity provider for the token tests: its JWK Set served over real HTTP (aiohttp
on a loopback port), signing keys that can be rotated mid-test, and tokens it issues.

Tokens are signed with PyJWT; the gateway sees nothing but the HTTP answers and the
tokens, as it would with a company's provider.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.conftest import free_port

ISSUER = "https://idp.test/"
AUDIENCE = "ai-service"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def new_key(algorithm: str) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: PrivateKey, kid: str, algorithm: str) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = json.loads(RSAAlgorithm.to_jwk(public))
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = json.loads(ECAlgorithm.to_jwk(public))
    else:
        jwk = json.loads(OKPAlgorithm.to_jwk(public))
    return {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}


class IdentityProvider:
    """Signing keys by kid, the JWK Set of the published ones, and a count of its fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[PrivateKey, str]] = {}
        self.published: list[str] = []
        self.fetches = 0
        self.url = ""
        self._serial = 0

    def add_key(self, algorithm: str = "RS256", *, publish: bool = True) -> str:
        self._serial += 1
        kid = f"key-{self._serial}"
        self.keys[kid] = (new_key(algorithm), algorithm)
        if publish:
            self.published.append(kid)
        return kid

    def rotate(self, algorithm: str = "RS256") -> str:
        """A new key published in place of all the others."""
        self.published.clear()
        return self.add_key(algorithm)

    def jwks(self) -> dict[str, Any]:
        keys = [public_jwk(self.keys[kid][0], kid, self.keys[kid][1]) for kid in self.published]
        return {"keys": keys}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, kid: str | None = None, **claims: Any) -> str:
        """A token signed with `kid` (default: the newest published key)."""
        kid = kid or self.published[-1]
        key, algorithm = self.keys[kid]
        return jwt.encode(self.claims(**claims), key, algorithm=algorithm, headers={"kid": kid})

    def public_pem(self, kid: str) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return (
            self.keys[kid][0]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    async def _serve_jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response(self.jwks())


@asynccontextmanager
async def identity_provider(algorithm: str = "RS256") -> AsyncIterator[IdentityProvider]:
    """An identity provider with one published key, serving /jwks.json until the block ends."""
    provider = IdentityProvider()
    provider.add_key(algorithm)
    app = web.Application()
    app.router.add_get("/jwks.json", provider._serve_jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    provider.url = f"http://127.0.0.1:{port}/jwks.json"
    try:
        yield provider
    finally:
        await runner.cleanup()


def jwt_settings(provider: IdentityProvider, **extra: Any) -> dict[str, Any]:
    """An `auth.jwt` section trusting `provider`."""
    return {
        "jwks_url": provider.url,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "refresh_interval_seconds": 1,
        **extra,
    }

"""Bearer tokens (JWT) from the company's identity provider, verified here.

A token is checked against the provider's published keys (`jwks`): its algorithm must be
on the allow-list (asymmetric only, never `none`, never an HMAC whose "secret" would be
the public key), its signature good, `iss` and `aud` the configured ones, `exp` and
`nbf` within the leeway. Its claims name the caller (`auth.jwt.claims`), and its roles
the grants (`auth.roles`). A verified token is kept until it expires, so a repeated
token costs a dictionary lookup, not a signature check. A token never appears in a log
line or an error.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from ai_service.config import CallerGrants, JwtSettings
from ai_service.errors import Unauthenticated
from ai_service.identity.callers import Caller, Grantor
from ai_service.identity.jwks import Jwks, JwksUnavailable


class TokenRefused(Unauthenticated):
    """A token the gateway does not accept; `reason` says which check failed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"bearer token refused: {message}")
        self.reason = reason


class TokenVerifier:
    """Tokens → callers, with verified tokens cached until they expire."""

    def __init__(self, settings: JwtSettings, grantor: Grantor, jwks: Jwks | None = None) -> None:
        self._settings = settings
        self._grantor = grantor
        self.jwks = jwks or Jwks(settings)
        self._algorithms = list(settings.algorithms)
        self._audience = list(settings.audience)
        #: token → (its caller, when it stops being accepted); oldest first.
        self._verified: dict[str, tuple[Caller, float]] = {}

    def cached(self, token: str) -> Caller | None:
        """The caller of a token verified before and not expired since (the hot path)."""
        entry = self._verified.get(token)
        if entry is None:
            return None
        if time.time() < entry[1]:
            return entry[0]
        del self._verified[token]
        return None

    async def verify(self, token: str) -> Caller:
        caller = self.cached(token)
        if caller is not None:
            return caller
        claims = await self._claims(token)
        caller = self._caller(claims)
        self._remember(token, caller, float(claims["exp"]) + self._settings.leeway_seconds)
        return caller

    async def _claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt_errors.DecodeError:
            raise TokenRefused("TOKEN_MALFORMED", "not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise TokenRefused(
                "TOKEN_ALGORITHM_NOT_ALLOWED",
                f"algorithm {str(algorithm)[:16]!r} is not one of {', '.join(self._algorithms)}",
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRefused("TOKEN_MALFORMED", "the header's kid is not a string")
        try:
            key = await self.jwks.key(kid)
        except JwksUnavailable as exc:
            raise TokenRefused("TOKEN_KEY_UNKNOWN", f"its signing key is unknown ({exc})") from None
        settings = self._settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt_errors.PyJWTError as exc:
            raise _refusal(exc) from None
        return claims

    def _caller(self, claims: Mapping[str, Any]) -> Caller:
        names = self._settings.claims
        name = claims.get(names.name)
        if not isinstance(name, str) or not name:
            raise TokenRefused("TOKEN_CLAIM_MISSING", f"claim {names.name!r} names no caller")
        team = claims.get(names.team) if names.team is not None else None
        roles = self._grantor.known_roles(_strings(claims.get(names.roles)) if names.roles else ())
        if not roles and self._settings.default_role is not None:
            roles = (self._settings.default_role,)
        models = None
        if names.models is not None and names.models in claims:
            models = _strings(claims[names.models])
        grants = CallerGrants(team=team if isinstance(team, str) and team else None, roles=roles)
        return self._grantor.caller(name, "jwt", grants, models=models)

    def _remember(self, token: str, caller: Caller, until: float) -> None:
        if len(self._verified) >= self._settings.max_cached_tokens:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = (caller, until)

    async def aclose(self) -> None:
        await self.jwks.aclose()


def _strings(value: object) -> tuple[str, ...]:
    """A claim that is a list of strings, or one space-separated string (OAuth `scope`)."""
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


#: Each failed check, its ErrorInfo reason and what the caller is told (most specific first).
_REFUSALS: tuple[tuple[type[jwt_errors.PyJWTError], str, str], ...] = (
    (jwt_errors.ExpiredSignatureError, "TOKEN_EXPIRED", "it has expired"),
    (jwt_errors.ImmatureSignatureError, "TOKEN_NOT_YET_VALID", "it is not valid yet (nbf)"),
    (jwt_errors.InvalidIssuedAtError, "TOKEN_NOT_YET_VALID", "it was issued in the future (iat)"),
    (jwt_errors.InvalidAudienceError, "TOKEN_AUDIENCE_INVALID", "it is not for this audience"),
    (jwt_errors.InvalidIssuerError, "TOKEN_ISSUER_INVALID", "it is from another issuer"),
    (jwt_errors.InvalidSignatureError, "TOKEN_SIGNATURE_INVALID", "its signature is wrong"),
    (jwt_errors.InvalidAlgorithmError, "TOKEN_ALGORITHM_NOT_ALLOWED", "its algorithm is refused"),
    (jwt_errors.MissingRequiredClaimError, "TOKEN_CLAIM_MISSING", "a required claim is missing"),
)


def _refusal(error: jwt_errors.PyJWTError) -> TokenRefused:
    for kind, reason, message in _REFUSALS:
        if isinstance(error, kind):
            if isinstance(error, jwt_errors.MissingRequiredClaimError):
                message = f"it has no {error.claim!r} claim"
            return TokenRefused(reason, message)
    return TokenRefused("TOKEN_MALFORMED", "not a well-formed JWT")

"""Who is calling, from whatever the call presents: one `Authenticator` tries the sources.

In order: a key from the config (a digest lookup), a bearer token from the identity
provider (a cached lookup, or a signature check the first time), a key issued at runtime
(a cached lookup), and — when the call presents no credential at all and mutual TLS is
on — the client certificate. Every source gives the same `Caller`.

`Identities` holds what outlives a config reload: the identity provider's keys and the
tokens verified with them, and the issued keys with their caches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ai_service.config import CallerGrants, GatewayConfig, JwtSettings
from ai_service.errors import Unauthenticated
from ai_service.identity.callers import Caller, Grantor
from ai_service.identity.certificates import AuthContext, CertificateIdentities
from ai_service.identity.keyring import (
    KeyRing,
    Metadata,
    digest_of,
    has_credentials,
    looks_like_jwt,
    presented_key,
)
from ai_service.identity.virtual_keys import VirtualKeys, key_store
from ai_service.limits.shared_state import SharedRedis

if TYPE_CHECKING:
    from ai_service.identity.jwks import Jwks
    from ai_service.identity.jwt import TokenVerifier

log = logging.getLogger(__name__)


class Authenticator:
    """The identity sources of one configuration, tried in order."""

    def __init__(
        self,
        keyring: KeyRing,
        *,
        tokens: TokenVerifier | None = None,
        certificates: CertificateIdentities | None = None,
        virtual: VirtualKeys | None = None,
    ) -> None:
        self._keyring = keyring
        self._tokens = tokens
        self._certificates = certificates or None
        self._virtual = virtual

    def wants_certificate(self, metadata: Metadata | None) -> bool:
        """Whether the caller must be found from its certificate: the call presents no
        credential, and certificates identify callers. (The certificate is read from the
        call's context, which only the handler sees.)"""
        return self._certificates is not None and not has_credentials(metadata or ())

    async def authenticate(self, metadata: Metadata | None) -> Caller:
        credential = presented_key(metadata or ())
        digest = digest_of(credential)
        caller = self._keyring.find(digest)
        if caller is not None:
            return caller
        if self._tokens is not None and looks_like_jwt(credential):
            return await self._tokens.verify(credential)
        if self._virtual is not None:
            caller = await self._virtual.lookup(digest)
            if caller is not None:
                return caller
        raise Unauthenticated("invalid API key")

    def from_certificate(self, context: AuthContext) -> Caller:
        assert self._certificates is not None
        return self._certificates.identify(context)


class Identities:
    """The identity sources a gateway keeps across reloads, and the `Authenticator` of
    each configuration."""

    def __init__(self, shared: SharedRedis | None) -> None:
        self._shared = shared
        self.tokens: TokenVerifier | None = None
        self.virtual: VirtualKeys | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self._started = False

    def access(self, config: GatewayConfig) -> tuple[Authenticator | None, Caller]:
        """Who may call under `config`: the authenticator (None with auth off) and the
        anonymous caller."""
        auth = config.auth
        grantor = Grantor(auth.roles, config.rate_limit)
        anonymous = grantor.caller("anonymous", "anonymous", _NO_GRANTS)
        self.tokens = self._tokens(auth.jwt, grantor)
        if auth.virtual_keys.enabled:
            if self.virtual is None:
                self.virtual = VirtualKeys(
                    auth.virtual_keys,
                    key_store(self._shared),
                    grantor,
                    shared=self._shared is not None,
                    fail_open=self._shared is None or self._shared.fail_open,
                )
            else:
                self.virtual.use(grantor)
            if self._started:
                self.virtual.start()
        if not auth.enabled:
            return None, anonymous
        authenticator = Authenticator(
            KeyRing(auth, grantor),
            tokens=self.tokens,
            certificates=CertificateIdentities(auth.certificates, grantor),
            virtual=self.virtual if auth.virtual_keys.enabled else None,
        )
        return authenticator, anonymous

    def _tokens(self, settings: JwtSettings | None, grantor: Grantor) -> TokenVerifier | None:
        # The provider's keys are kept when the settings that fetch them did not change;
        # verified tokens are not (their callers were built from the old roles).
        old = self.tokens
        if settings is None:
            if old is not None:
                self._retire(old.jwks)
            return None
        # PyJWT (and cryptography) load with the first identity provider configured.
        from ai_service.identity.jwks import Jwks
        from ai_service.identity.jwt import TokenVerifier

        jwks = old.jwks if old is not None and old.jwks.settings == settings else None
        if old is not None and jwks is None:
            self._retire(old.jwks)
        verifier = TokenVerifier(settings, grantor, jwks or Jwks(settings))
        if jwks is None and self._started:
            verifier.jwks.start()
        return verifier

    def _retire(self, jwks: Jwks) -> None:
        task = asyncio.ensure_future(jwks.aclose())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    def start(self) -> None:
        """Start the background work (in the running loop): the first fetch of the
        provider's keys, and the check for changed keys."""
        self._started = True
        if self.tokens is not None:
            self.tokens.jwks.start()
        if self.virtual is not None:
            self.virtual.start()

    async def aclose(self) -> None:
        if self.tokens is not None:
            await self.tokens.aclose()
        if self.virtual is not None:
            await self.virtual.aclose()
        await asyncio.gather(*self._retired)


def access(config: GatewayConfig) -> tuple[Authenticator | None, Caller]:
    """The authenticator of `config` alone (nothing kept across reloads)."""
    return Identities(None).access(config)


_NO_GRANTS = CallerGrants()

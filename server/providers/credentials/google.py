"""Google OAuth access tokens through google-auth, for Vertex AI.

The credentials are google-auth's own: a credentials file (a service-account key, whose
signed JWT is exchanged at its `token_uri`; or an authorized-user or external-account
file) or, without one, the environment's default credentials (GOOGLE_APPLICATION_CREDENTIALS,
gcloud's, the metadata server's). google-auth refreshes synchronously over `requests`, so
a refresh runs in a worker thread; its session goes the provider's way out (proxy, CA,
client certificate), except to the metadata server, which is link-local and reached
directly.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any
from urllib.parse import urlsplit

import google.auth
import google.auth.exceptions
import requests
from google.auth.credentials import Credentials as GoogleCredentials
from google.auth.transport import Request as GoogleRequest
from google.auth.transport.requests import Request as RequestsRequest
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from ai_service.config import ProviderSettings
from ai_service.providers.credentials.tokens import CredentialError, Token

#: The metadata server's names (google.auth.compute_engine): never through a proxy.
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "169.254.169.254"})
#: When a token says nothing of its expiry: Google's tokens last an hour.
_DEFAULT_LIFETIME = 3600.0


def egress_session(settings: ProviderSettings) -> requests.Session:
    """A `requests` session that goes the provider's way out, and nowhere else."""
    session = requests.Session()
    session.trust_env = False  # the config already decided the proxy (egress.trust_env)
    proxy = settings.egress.proxy_url
    if proxy is not None:
        session.proxies = {"http": proxy, "https": proxy}
    tls = settings.egress.tls
    session.verify = tls.ca_file if tls.ca_file is not None else tls.verify is not False
    if tls.cert_file is not None:
        session.cert = (tls.cert_file, tls.key_file) if tls.key_file else tls.cert_file
    return session


class _EgressRequest(GoogleRequest):
    """google-auth's HTTP transport over the egress session (direct to the metadata server)."""

    def __init__(self, settings: ProviderSettings) -> None:
        self._out = RequestsRequest(egress_session(settings))
        direct = requests.Session()
        direct.trust_env = False
        self._direct = RequestsRequest(direct)

    def __call__(self, url: str, method: str = "GET", *args: Any, **kwargs: Any) -> Any:
        host = urlsplit(url).hostname or ""
        transport = self._direct if host in _METADATA_HOSTS else self._out
        return transport(url, method, *args, **kwargs)


class GoogleTokenSource:
    describes = "the Google OAuth access token"

    def __init__(self, settings: ProviderSettings) -> None:
        assert settings.vertex is not None
        self._file = settings.vertex.credentials_file
        self._scopes = list(settings.vertex.scopes)
        self._request = _EgressRequest(settings)
        self._credentials: GoogleCredentials | None = None

    async def fetch(self) -> Token:
        return await asyncio.to_thread(self._refresh)

    async def aclose(self) -> None:
        pass

    def _refresh(self) -> Token:
        try:
            credentials = self._credentials or self._load()
            credentials.refresh(self._request)  # type: ignore[no-untyped-call]
        except google.auth.exceptions.GoogleAuthError as exc:
            raise CredentialError(f"{type(exc).__name__}: {exc}") from None
        except (OSError, ValueError) as exc:  # an unreadable or invalid file, a socket error
            raise CredentialError(f"{type(exc).__name__}: {exc}") from None
        token = credentials.token
        if not isinstance(token, str):
            raise CredentialError("google-auth returned no token")
        expiry = credentials.expiry  # naive UTC, as google-auth keeps it
        if expiry is None:
            return Token(token, _DEFAULT_LIFETIME)
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        return Token(token, (expiry - now).total_seconds())

    def _load(self) -> GoogleCredentials:
        loaded: GoogleCredentials
        if self._file is None:
            loaded, _ = google.auth.default(scopes=self._scopes, request=self._request)
        else:
            loaded = self._from_file(self._file)
        self._credentials = loaded
        return loaded

    def _from_file(self, path: str) -> GoogleCredentials:
        """The file's credentials: the two common types by their own loaders, any other
        (external account, impersonation) by google-auth's generic one."""
        with open(path, encoding="utf-8") as file:
            kind = json.load(file).get("type")
        if kind == "service_account":
            return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call,no-any-return]
                path, scopes=self._scopes
            )
        if kind == "authorized_user":
            return user_credentials.Credentials.from_authorized_user_file(  # type: ignore[no-untyped-call,no-any-return]
                path, self._scopes
            )
        loaded, _ = google.auth.load_credentials_from_file(  # type: ignore[no-untyped-call]
            path, scopes=self._scopes
        )
        return loaded  # type: ignore[no-any-return]

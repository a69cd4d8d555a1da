"""Microsoft Entra ID access tokens by the client-credentials grant, for Azure OpenAI.

`POST {authority}/{tenant}/oauth2/v2.0/token` with the form fields `client_id`,
`client_secret`, `scope` and `grant_type=client_credentials`; the answer is
`{"token_type": "Bearer", "expires_in": 3599, "access_token": "..."}`
(https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow).
The grant gives no refresh token: a new token is asked for the same way. The request
goes through the provider's own HTTP client, so its egress (proxy, CA) applies.
"""

from __future__ import annotations

from urllib.parse import urlencode

import orjson

from ai_service.config.clouds import EntraSettings
from ai_service.errors import UpstreamError, keep_secret
from ai_service.providers.credentials.tokens import CredentialError, Token
from ai_service.providers.egress import upstream_headers
from ai_service.providers.http import HttpClient

_HEADERS = upstream_headers(
    {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}
)


class EntraTokenSource:
    describes = "the Microsoft Entra ID token"

    def __init__(self, settings: EntraSettings, http: HttpClient) -> None:
        secret = settings.client_secret.get_secret_value()
        keep_secret(secret)
        self.url = settings.token_url
        self._http = http
        self._body = urlencode(
            {
                "client_id": settings.client_id,
                "client_secret": secret,
                "scope": settings.scope,
                "grant_type": "client_credentials",
            }
        ).encode()

    async def fetch(self) -> Token:
        try:
            async with self._http.post(self.url, self._body, _HEADERS) as response:
                status, body = response.status, await response.read()
        except UpstreamError as exc:
            raise CredentialError(exc.message) from None
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            raise CredentialError(f"{self.url} answered HTTP {status} without a JSON object")
        if status != 200:
            why = payload.get("error_description") or payload.get("error") or "no description"
            raise CredentialError(f"{self.url} answered HTTP {status}: {why}")
        token, lifetime = payload.get("access_token"), payload.get("expires_in")
        try:
            seconds = float(str(lifetime))  # a number, or a string of one (older endpoints)
        except ValueError:
            seconds = -1.0
        if not isinstance(token, str) or seconds < 0:
            raise CredentialError(f"{self.url} answered without access_token and expires_in")
        return Token(token, seconds)

    async def aclose(self) -> None:
        pass  # the provider's HTTP client is closed with the provider

"""The credential-provider seam: how a request to an upstream proves who the gateway is.

Every adapter's `UpstreamEndpoint` holds one `Credentials`:

* `StaticKey` (`static.py`): a key in a header, fixed for the provider's life (OpenAI's
  bearer, Anthropic's `x-api-key`, Azure's `api-key`, Gemini's `x-goog-api-key`, a
  Bedrock API key);
* `RefreshingToken` (`tokens.py`): an OAuth access token from a `TokenSource` (Microsoft
  Entra ID client credentials, `entra.py`; Google's service accounts and default
  credentials through google-auth, `google.py`), renewed ahead of its expiry by one
  single flight and dropped after a 401 so that the one retry carries a new one;
* `SigV4` (`aws.py`): each request signed with botocore's signer and credentials from
  botocore's chain, renewed as botocore renews them.

A credential that cannot be had (a refresh refused, no AWS credentials anywhere) is an
`UpstreamUnavailable` naming its cause: retried elsewhere and counted against the
deployment's circuit like any upstream failure. Every secret involved is registered with
`keep_secret`, so no status carries one; none is ever logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """What a signature covers: the URL, the body, and the request's other headers."""

    url: str
    body: bytes
    headers: Mapping[str, str]


class Credentials(Protocol):
    @property
    def dynamic(self) -> bool:
        """False when `static_headers` is all a request needs (asked once, not per request)."""
        ...

    @property
    def static_headers(self) -> Mapping[str, str]:
        """Headers every request carries."""
        ...

    async def authorize(self, request: OutgoingRequest) -> Mapping[str, str]:
        """The headers that authenticate `request` (dynamic credentials only)."""
        ...

    def refused(self, sent: Mapping[str, str]) -> bool:
        """The upstream answered 401 to a request that carried `sent`: forget it, and say
        whether another attempt would carry something new (a token renewed)."""
        ...

    async def aclose(self) -> None: ...


__all__ = ["Credentials", "OutgoingRequest"]

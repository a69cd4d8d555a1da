"""What every HTTP client behind the seam shares to reach an upstream: the proxy, the TLS
context, the headers every request carries, and how a failure to get there is told.

The settings come resolved from the config (`ProviderSettings.egress`: defaults filled in,
the environment's proxy already decided); each client turns them into its library's
terms, and reports a connection it could not make through `unreachable` or
`proxy_refused` here, so every client logs and words the same cause the same way.
"""

from __future__ import annotations

import base64
import errno
import importlib.metadata
import logging
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ai_service.config import ProviderSettings, proxy_address
from ai_service.errors import UpstreamUnavailable, keep_secret, scrub_secrets

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return importlib.metadata.version("ai-service")
    except importlib.metadata.PackageNotFoundError:  # run from a bare source tree
        return "unknown"


USER_AGENT = f"ai-service/{_version()}"
#: Sent with every upstream request unless the provider's `headers` name them.
DEFAULT_HEADERS = {"user-agent": USER_AGENT, "accept-encoding": "gzip"}


def upstream_headers(*layers: Mapping[str, str]) -> dict[str, str]:
    """The defaults, then each layer over them; a name set again in any letter case
    replaces the earlier one (HTTP header names are case-insensitive)."""
    merged: dict[str, tuple[str, str]] = {
        name: (name, value) for name, value in DEFAULT_HEADERS.items()
    }
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    return dict(merged.values())


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy; `address` is what messages name (never the credentials)."""

    host: str
    port: int
    username: str | None
    password: str | None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The proxy's URL without credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def authorization(self) -> str | None:
        """The `Proxy-Authorization` value (Basic), or None without credentials."""
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


@dataclass(frozen=True)
class Egress:
    """One provider's way out: through `proxy` (or directly), TLS by `tls`."""

    provider: str
    proxy: Proxy | None
    tls: ssl.SSLContext


def egress_of(settings: ProviderSettings) -> Egress:
    """The egress a provider's settings describe; its proxy credentials become secrets
    that no status or log line carries, and `verify: false` is logged as a WARNING."""
    url = settings.egress.proxy_url
    proxy = None
    if url is not None:
        host, port = proxy_address(url)
        parts = urlsplit(url if "://" in url else f"http://{url}")
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        userinfo = parts.netloc.rpartition("@")[0]
        for secret in (userinfo, parts.username, parts.password, username, password):
            if secret:
                keep_secret(secret)
        proxy = Proxy(host, port, username, password)
    tls = settings.egress.tls
    if tls.verify is False and settings.base_url.startswith("https://"):
        log.warning(
            "TLS verification of the upstream is OFF (egress.tls.verify: false): any "
            "certificate for any name is accepted, so the connection can be intercepted",
            extra={"provider": settings.name, "base_url": settings.base_url},
        )
    if proxy is not None:
        log.info(
            "upstream reached through an HTTP proxy",
            extra={"provider": settings.name, "proxy": proxy.address},
        )
    return Egress(settings.name, proxy, tls.context())


def unreachable(egress: Egress, url: str, error: BaseException) -> UpstreamUnavailable:
    """The error (logged as a WARNING with its cause) for a connection that could not be
    made, or that TLS refused; `error` is the library's exception."""
    return _failed(egress, url, describe(error, egress.proxy))


def proxy_refused(egress: Egress, url: str, status: int, reason: str) -> UpstreamUnavailable:
    """The error (logged as a WARNING) for a proxy that refused to forward or tunnel."""
    assert egress.proxy is not None
    where = f"proxy {egress.proxy.address}"
    if status in (401, 407):  # 401: what some proxies (tinyproxy) answer wrong credentials
        given = "wrong" if egress.proxy.username is not None else "missing"
        cause = f"{where} requires authentication ({status} {reason}): credentials {given}"
    else:
        cause = f"{where} refused the connection: {status} {reason}".rstrip()
    return _failed(egress, url, cause)


def check_proxy_answer(egress: Egress, url: str, status: int, reason: str) -> None:
    """A forwarded (http) request's 407 is the proxy's answer, not the upstream's. (Over
    a CONNECT tunnel only the upstream answers: the proxy refused the tunnel, if at all.)"""
    if status == 407 and egress.proxy is not None and url.startswith("http://"):
        raise proxy_refused(egress, url, status, reason or "Proxy Authentication Required")


def describe(error: BaseException, proxy: Proxy | None) -> str:
    """The cause of a failed connection, in words: the TLS verdict, the refusing proxy,
    the socket error. Never the proxy's credentials."""
    chain = list(_causes(error))
    # aiohttp's own exceptions subclass the ssl ones without their details: skip those.
    for found in chain:
        verdict = getattr(found, "verify_message", None)
        if isinstance(found, ssl.SSLCertVerificationError) and verdict:
            return f"TLS certificate verify failed: {verdict}"
    for found in chain:
        reason = getattr(found, "reason", None)
        if isinstance(found, ssl.SSLError) and reason:
            return f"TLS failed: {reason}"
    # A socket error with a proxy in use: every TCP connection goes to the proxy.
    to = f"proxy {proxy.address}" if proxy is not None else "upstream"
    for found in chain:
        if isinstance(found, socket.gaierror):
            return f"{to} host name did not resolve ({found.strerror})"
        if isinstance(found, ConnectionRefusedError) or (
            isinstance(found, OSError) and found.errno == errno.ECONNREFUSED
        ):
            return f"{to} refused the connection (connection refused)"
        if isinstance(found, OSError) and found.errno:
            return f"{to}: {os.strerror(found.errno).lower()}"
    return scrub_secrets(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)


def _causes(error: BaseException) -> list[BaseException]:
    """`error` and what it wraps: its cause and context chain, and the exceptions aiohttp
    keeps as attributes (`certificate_error`, `os_error`)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        item = todo.pop(0)
        if item is None or any(item is known for known in seen):
            continue
        seen.append(item)
        for attribute in ("certificate_error", "os_error"):
            inner = getattr(item, attribute, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
        todo += [item.__cause__, item.__context__]
    return seen


def _failed(egress: Egress, url: str, cause: str) -> UpstreamUnavailable:
    cause = scrub_secrets(cause)
    log.warning(
        "upstream unreachable", extra={"provider": egress.provider, "url": url, "cause": cause}
    )
    return UpstreamUnavailable(f"upstream connection failed at {url}: {cause}")

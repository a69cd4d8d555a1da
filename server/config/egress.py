"""Egress: how the gateway reaches its upstreams, through which proxy and with what TLS.

The top-level `egress` block is every provider's default; a provider's own `egress`
overrides it setting by setting. The proxy is decided at load: the config's, or the
environment's (HTTPS_PROXY, HTTP_PROXY, NO_PROXY, as curl reads them) when trust_env.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from ai_service.config.base import StrictSettings


class UpstreamTLSSettings(StrictSettings):
    """TLS towards https upstreams: whom to trust and what to show; TLS 1.2 at least.

    A provider's own block overrides the top-level one in pairs: `ca_file` and `verify`
    together (whom to trust), `cert_file` and `key_file` together (what to show).
    """

    #: CA bundle (PEM) that upstream certificates must chain to, in place of the system's
    #: trust store: a company's private CA, or the CA of a TLS-inspecting proxy.
    ca_file: str | None = Field(None, min_length=1)
    #: false accepts any certificate for any name (a WARNING is logged at start): only for
    #: an upstream whose certificate cannot be fixed. Default true.
    verify: bool | None = None
    #: Client certificate (PEM) shown to upstreams that require one (mutual TLS) ...
    cert_file: str | None = Field(None, min_length=1)
    #: ... and its private key, unless it is in cert_file.
    key_file: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _usable(self) -> UpstreamTLSSettings:
        if self.verify is False and self.ca_file is not None:
            raise ValueError("ca_file: has no use with verify: false (nothing is checked)")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file: given without cert_file")
        self.context()  # refuses unreadable or mismatched files now, not at the first call
        return self

    @property
    def trust_set(self) -> bool:
        return self.ca_file is not None or self.verify is not None

    @property
    def identity_set(self) -> bool:
        return self.cert_file is not None

    def context(self) -> ssl.SSLContext:
        """The client-side SSL context these settings describe (a new one per call)."""
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.ca_file is not None:
            _load("ca_file", self.ca_file, lambda: context.load_verify_locations(self.ca_file))
        if self.cert_file is not None:
            cert, key = self.cert_file, self.key_file

            def load_identity() -> None:
                # An encrypted key is refused, never asked for on a terminal.
                context.load_cert_chain(cert, key, password=_no_password)

            _load("cert_file", cert, load_identity)
        return context


def _no_password() -> str:
    return ""


def _load(field: str, path: str, load: Callable[[], None]) -> None:
    try:
        load()
    except ssl.SSLError as exc:
        # OpenSSL says no more than "PEM lib" for, among others, an encrypted key.
        why = exc.reason or "PEM lib"
        if why == "PEM lib":
            why = "not a PEM certificate" + (
                " and unencrypted private key" if field == "cert_file" else ""
            )
        raise ValueError(f"{field}: cannot use {path}: {why}") from None
    except OSError as exc:
        raise ValueError(f"{field}: cannot read {path}: {exc.strerror}") from None


#: `proxy: direct`: no proxy for this provider, whatever the defaults or environment say.
DIRECT = "direct"


class EgressSettings(StrictSettings):
    """How the gateway reaches upstreams. The top-level `egress` block is every provider's
    default; a provider's own `egress` overrides it setting by setting."""

    #: The HTTP proxy upstream connections go through, `http://[user:password@]host:port`
    #: (give credentials as `${ENV}`): https upstreams are tunnelled with CONNECT, http
    #: ones forwarded. `direct`: no proxy. Unset: the environment's, if trust_env.
    proxy: SecretStr | None = None
    #: Take the proxy from HTTPS_PROXY / HTTP_PROXY (for https / http upstreams) and
    #: NO_PROXY, or their lowercase forms, when `proxy` is unset. Default true.
    trust_env: bool | None = None
    tls: UpstreamTLSSettings = Field(default_factory=UpstreamTLSSettings)

    @field_validator("proxy")
    @classmethod
    def _proxy_is_http(cls, proxy: SecretStr | None) -> SecretStr | None:
        if proxy is not None and not proxy.get_secret_value():
            raise ValueError(f"is empty (is its environment variable set?); '{DIRECT}' means none")
        if proxy is not None and proxy.get_secret_value() != DIRECT:
            proxy_address(proxy.get_secret_value())
        return proxy

    @property
    def proxy_url(self) -> str | None:
        """The proxy to use (credentials included), or None to connect directly."""
        url = self.proxy.get_secret_value() if self.proxy is not None else None
        return None if url in (None, DIRECT) else url


def proxy_address(url: str) -> tuple[str, int]:
    """(host, port) of an `http://` proxy URL; the errors never quote the URL, which may
    hold credentials."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ValueError(
            f"a {parts.scheme}:// proxy is not supported; give http://host:port "
            f"(https upstreams are still encrypted end to end, tunnelled with CONNECT)"
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError("the proxy URL's port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ValueError("the proxy URL names no host")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError("the proxy URL has a path: give http://[user:password@]host:port")
    return parts.hostname, port


def _environment_proxy(base_url: str, env: Mapping[str, str]) -> str | None:
    """The proxy the environment gives for `base_url`, as curl and other HTTP tools read it
    (the lowercase name first), or None when none is set or NO_PROXY exempts the host."""
    scheme = urlsplit(base_url).scheme
    name = f"{scheme}_proxy"
    proxy = env.get(name) or env.get(name.upper())
    if not proxy:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    if _exempt(urlsplit(base_url), no_proxy):
        return None
    try:
        proxy_address(proxy)
    except ValueError as exc:
        source = name if env.get(name) else name.upper()
        raise ValueError(
            f"{source} from the environment: {exc} (or set trust_env: false)"
        ) from None
    return proxy if "://" in proxy else f"http://{proxy}"


def _exempt(url: SplitResult, no_proxy: str) -> bool:
    """Whether NO_PROXY (`*`, or host names, domain suffixes and host:port, by commas)
    names the host of `url`."""
    host = (url.hostname or "").lower()
    address = f"{host}:{url.port}" if url.port else host
    for entry in no_proxy.lower().split(","):
        name = entry.strip().removeprefix("*").lstrip(".")
        if entry.strip() == "*" or name in (host, address) or host.endswith(f".{name}"):
            return True
    return False


def effective_egress(
    own: EgressSettings, defaults: EgressSettings, base_url: str, env: Mapping[str, str] | None
) -> EgressSettings:
    """A provider's egress with the defaults filled in and the proxy decided (`direct` when
    there is none); `env` None leaves an unset proxy unset (no environment to ask)."""
    trust_env = own.trust_env if own.trust_env is not None else defaults.trust_env
    trust_env = trust_env is not False
    proxy = own.proxy if own.proxy is not None else defaults.proxy
    if proxy is None and env is not None:
        found = _environment_proxy(base_url, env) if trust_env else None
        proxy = SecretStr(found or DIRECT)
    mine, theirs = own.tls, defaults.tls
    if urlsplit(base_url).scheme != "https":
        theirs = UpstreamTLSSettings()  # no TLS to use them on
    trust = mine if mine.trust_set else theirs
    identity = mine if mine.identity_set else theirs
    tls = UpstreamTLSSettings.model_construct(  # both halves were validated already
        ca_file=trust.ca_file,
        verify=trust.verify,
        cert_file=identity.cert_file,
        key_file=identity.key_file,
    )
    return EgressSettings.model_construct(proxy=proxy, trust_env=trust_env, tls=tls)

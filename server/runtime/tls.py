"""Server credentials for TLS and mutual TLS on the gRPC listener, rotated on a reload.

The listener's credentials are gRPC's dynamic ones: gRPC asks `ServerCertificates`
for a new certificate configuration at each handshake, and gets one after a reload
has read the files again. New connections then use the new certificate, key and client
CA; connections already open keep theirs and are not dropped. Turning TLS, or mutual
TLS, on or off is a different listener: that needs a restart.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import cast

import grpc

from ai_service.config import ConfigError, TLSSettings


def server_credentials(settings: TLSSettings) -> grpc.ServerCredentials:
    """TLS credentials from the configured files; client certificates required with a CA."""
    return ServerCertificates(settings).credentials()


class ServerCertificates:
    """The listener's TLS files, read again by `rotate`."""

    def __init__(self, settings: TLSSettings) -> None:
        self.settings = settings
        self.mutual = settings.client_ca_file is not None
        self._initial = certificate_configuration(settings)
        #: Taken by gRPC at the next handshake (from a thread of its own): a plain
        #: attribute swap, atomic under the GIL.
        self._pending: grpc.ServerCertificateConfiguration | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self._fetch, require_client_authentication=self.mutual
        )

    def can_rotate_to(self, settings: TLSSettings | None) -> bool:
        """Whether `settings` is the same kind of listener (TLS, mutual or not)."""
        return settings is not None and (settings.client_ca_file is not None) == self.mutual

    def rotate(self, settings: TLSSettings) -> None:
        """Read `settings`' files (ConfigError naming what is wrong, and nothing changes);
        new handshakes use them. Blocks on the disk: call it off the event loop."""
        assert self.can_rotate_to(settings)
        self._pending = certificate_configuration(settings)
        self.settings = settings

    def _fetch(self) -> grpc.ServerCertificateConfiguration:
        # None (which the stubs do not know of): keep the configuration gRPC has.
        pending, self._pending = self._pending, None
        return cast(grpc.ServerCertificateConfiguration, pending)


def certificate_configuration(settings: TLSSettings) -> grpc.ServerCertificateConfiguration:
    """The configured files, read and checked, as gRPC takes them."""

    unreadable: list[str] = []

    def read(field: str, path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            unreadable.append(f"server.tls.{field}: cannot read {path}: {exc.strerror}")
            return b""

    certificate = read("cert_file", settings.cert_file)
    key = read("key_file", settings.key_file)
    client_ca = (
        read("client_ca_file", settings.client_ca_file)
        if settings.client_ca_file is not None
        else None
    )
    if unreadable:  # every file that cannot be read, named at once
        raise ConfigError(*unreadable)
    _check_pem(settings)
    return grpc.ssl_server_certificate_configuration([(key, certificate)], client_ca)


def _check_pem(settings: TLSSettings) -> None:
    """Refuse what gRPC would only report as a failure to bind the port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=settings.cert_file)  # a PEM certificate?
    except ssl.SSLError as exc:
        raise ConfigError(f"server.tls.cert_file: not a PEM certificate ({exc})") from None
    try:
        # An empty password: an encrypted key is refused, not asked for at a terminal.
        context.load_cert_chain(settings.cert_file, settings.key_file, password=b"")
    except ssl.SSLError as exc:
        raise ConfigError(
            f"server.tls.key_file: not the unencrypted PEM key of cert_file ({exc})"
        ) from None
    if settings.client_ca_file is not None:
        try:
            context.load_verify_locations(settings.client_ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(f"server.tls.client_ca_file: not a PEM CA bundle ({exc})") from None

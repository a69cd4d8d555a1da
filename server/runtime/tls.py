"""Server credentials for TLS and mutual TLS on the gRPC listener."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from ai_service.config import ConfigError, TLSSettings


def server_credentials(settings: TLSSettings) -> grpc.ServerCredentials:
    """TLS credentials from the configured files; client certificates required with a CA."""

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
    return grpc.ssl_server_credentials(
        [(key, certificate)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


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

"""Server credentials for TLS and mutual TLS on the gRPC listener."""

from __future__ import annotations

from pathlib import Path

import grpc

from server.config import ConfigError, TLSSettings


def server_credentials(settings: TLSSettings) -> grpc.ServerCredentials:
    """TLS credentials from the configured files; client certificates required with a CA."""

    def read(field: str, path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"server.tls.{field}: cannot read {path}: {exc.strerror}") from None

    key = read("key_file", settings.key_file)
    certificate = read("cert_file", settings.cert_file)
    client_ca = read("client_ca_file", settings.client_ca_file) if settings.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, certificate)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )

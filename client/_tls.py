"""TLS settings for the client channel: file paths in, gRPC credentials out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["TLSOptions"]


@dataclass(frozen=True)
class TLSOptions:
    """Where to find the certificates for a TLS (or mutual TLS) channel.

    Every field is optional: `TLSOptions()` means TLS with the system's root
    certificates. Give both `client_certificate_path` and `client_key_path` for mTLS.
    `server_name_override` checks the server's certificate against this name instead
    of the host in the target (for tests and for addressing a server by IP).
    """

    root_certificates_path: str | Path | None = None
    client_certificate_path: str | Path | None = None
    client_key_path: str | Path | None = None
    server_name_override: str | None = None

    def __post_init__(self) -> None:
        # Half a client identity is a configuration mistake; say so before connecting.
        if (self.client_certificate_path is None) != (self.client_key_path is None):
            raise ValueError("client_certificate_path and client_key_path go together")

    def credentials(self) -> grpc.ChannelCredentials:
        """Read the files (now, so a wrong path fails at construction) into credentials."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.root_certificates_path),
            private_key=_read(self.client_key_path),
            certificate_chain=_read(self.client_certificate_path),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        """Channel arguments this TLS setup needs."""
        if self.server_name_override is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name_override)]


def _read(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()

"""A throwaway certificate authority for TLS tests: a CA, a server and a client certificate,
and more certificates from the same CA on demand (`issue`)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.servers import require


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    ca_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path) -> Certificates:
    require("openssl")  # fails, not skips, when .ci/run promised the servers
    ca_key, ca = folder / "ca.key", folder / "ca.pem"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-subj",
        "/CN=ai-service test CA",
    )
    server = issue(folder, ca, ca_key, "server", "DNS:localhost,IP:127.0.0.1")
    client = issue(folder, ca, ca_key, "client")
    return Certificates(ca, *server, *client, ca_key)


def issue(
    folder: Path,
    ca: Path,
    ca_key: Path,
    name: str,
    server_names: str | None = None,
    *,
    client_names: str | None = None,
) -> tuple[Path, Path]:
    """A certificate and key signed by the CA: a server's for `server_names` (the
    subjectAltName list, e.g. `DNS:localhost,IP:127.0.0.1`), else a client's, with
    `client_names` as its subjectAltName (e.g. `URI:spiffe://example.org/billing`)."""
    extension = (
        f"subjectAltName={server_names}\nextendedKeyUsage=serverAuth"
        if server_names is not None
        else "extendedKeyUsage=clientAuth"
    )
    if client_names is not None:
        extension += f"\nsubjectAltName={client_names}"
    key, request, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    extensions = folder / f"{name}.ext"
    extensions.write_text(extension + "\n", encoding="utf-8")
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(request),
        "-subj",
        f"/CN={name}",
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(request),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        str(cert),
        "-extfile",
        str(extensions),
    )
    return cert, key


def encrypted(key: Path, password: str) -> Path:
    """A copy of the private key `key`, encrypted with `password`."""
    copy = key.with_name(f"{key.stem}-encrypted.key")
    _openssl("pkey", "-in", str(key), "-aes128", "-passout", f"pass:{password}", "-out", str(copy))
    return copy

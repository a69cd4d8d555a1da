"""A throwaway certificate authority for TLS tests: a CA, a server and a client certificate."""

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
    issued: dict[str, tuple[Path, Path]] = {}
    for name, extension in (
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
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
        issued[name] = (cert, key)
    return Certificates(ca, *issued["server"], *issued["client"])

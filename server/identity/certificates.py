"""Client certificates as identities: with mutual TLS, the certificate the client
presented (and gRPC verified against `server.tls.client_ca_file`) names the caller, by
its subject's common name or a subjectAltName entry (`auth.certificates`), so a
service can call without any secret in its metadata."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ai_service.config import CertificateIdentity
from ai_service.errors import Unauthenticated
from ai_service.identity.callers import Caller, Grantor

#: gRPC's auth context: property name → values (bytes).
AuthContext = Mapping[str, Iterable[bytes]]

#: Certificates whose identity is remembered (a client shows the same one on every call).
_MAX_REMEMBERED = 10_000


class CertificateIdentities:
    """The configured certificate identities, matched against a verified client certificate."""

    def __init__(self, identities: Iterable[CertificateIdentity], grantor: Grantor) -> None:
        self._by_match: dict[tuple[str, str], Caller] = {}
        for identity in identities:
            caller = grantor.caller(identity.name, "certificate", identity)
            for match in identity.matches:
                self._by_match[match] = caller
        #: PEM → its caller (None: it identifies none), so a certificate is parsed once.
        self._seen: dict[bytes, Caller | None] = {}

    def __bool__(self) -> bool:
        return bool(self._by_match)

    def identify(self, context: AuthContext) -> Caller:
        pems = list(context.get("x509_pem_cert") or ())
        if not pems:
            raise Unauthenticated(
                "missing credentials: send 'authorization: Bearer <key>' or 'x-api-key: <key>',"
                " or a client certificate that identifies a caller"
            )
        pem = pems[0]
        if pem in self._seen:
            caller = self._seen[pem]
        else:
            caller = self._match(pem)
            if len(self._seen) >= _MAX_REMEMBERED:
                self._seen.clear()
            self._seen[pem] = caller
        if caller is None:
            raise Unauthenticated("the client certificate identifies no caller (auth.certificates)")
        return caller

    def _match(self, pem: bytes) -> Caller | None:
        for match in certificate_names(pem):
            caller = self._by_match.get(match)
            if caller is not None:
                return caller
        return None


def certificate_names(pem: bytes) -> list[tuple[str, str]]:
    """What a PEM certificate can be matched by: (`san_uri` | `san_dns` | `san_email` |
    `subject_cn`, value), subjectAltName entries first."""
    # Imported by the first certificate read: a gateway that identifies no caller by its
    # certificate never loads cryptography.
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    certificate = x509.load_pem_x509_certificate(pem)
    names: list[tuple[str, str]] = []
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        names += [
            ("san_uri", uri) for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        ]
        names += [("san_dns", dns) for dns in san.get_values_for_type(x509.DNSName)]
        names += [("san_email", email) for email in san.get_values_for_type(x509.RFC822Name)]
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        if isinstance(attribute.value, str):
            names.append(("subject_cn", attribute.value))
    return names

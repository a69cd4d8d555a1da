"""AWS Signature Version 4, checked as AWS checks it: the simulator's own implementation.

From https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html: the
canonical request (method, the path URI-encoded again, the sorted query, the signed
headers lowercased with their values trimmed, the payload's SHA-256), the string to sign
(`AWS4-HMAC-SHA256`, the `X-Amz-Date`, the credential scope, the canonical request's
hash) and the HMAC chain from `AWS4` + secret through date, region, service and
`aws4_request`. Written apart from botocore's signer, so that a request botocore signed
is checked by something botocore did not write.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

ALGORITHM = "AWS4-HMAC-SHA256"
#: How far a request's X-Amz-Date may be from the server's clock.
MAX_SKEW = datetime.timedelta(minutes=5)
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})"
)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class SignatureProblem:
    """Why a signature is refused: AWS's exception name and message, with status 403."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class SigningKey:
    secret: str
    session_token: str | None = None


def verify(
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    service: str,
    key_for: Callable[[str], SigningKey | None],
    now: datetime.datetime | None = None,
) -> SignatureProblem | None:
    """None when the request is signed by a key `key_for` knows; else what is wrong."""
    authorization = headers.get("Authorization", "")
    match = _AUTHORIZATION.fullmatch(authorization.strip())
    if match is None:
        return SignatureProblem(
            "MissingAuthenticationTokenException", "Missing Authentication Token"
        )
    key = key_for(match["key"])
    if key is None:
        return SignatureProblem(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if key.session_token is not None and headers.get("X-Amz-Security-Token") != key.session_token:
        return SignatureProblem(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if match["service"] != service:
        return SignatureProblem(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{service}'.",
        )
    stamp = headers.get("X-Amz-Date", "")
    try:
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return SignatureProblem("IncompleteSignatureException", "X-Amz-Date is missing or invalid.")
    now = now or datetime.datetime.now(datetime.UTC)
    if abs(now - when) > MAX_SKEW:
        return SignatureProblem("InvalidSignatureException", "Signature expired: " + stamp)
    signed = match["signed"].split(";")
    if "host" not in signed or any(name not in headers for name in signed):
        return SignatureProblem(
            "IncompleteSignatureException", "Signed headers must include host, and be present."
        )
    canonical = canonical_request(method, raw_path, headers, signed, body)
    scope = f"{match['date']}/{match['region']}/{match['service']}/aws4_request"
    to_sign = "\n".join((ALGORITHM, stamp, scope, _sha256(canonical.encode())))
    signing = _signing_key(key.secret, match["date"], match["region"], match["service"])
    expected = hmac.new(signing, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match["signature"]):
        return SignatureProblem(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details.",
        )
    return None


def canonical_request(
    method: str, raw_path: str, headers: Mapping[str, str], signed: list[str], body: bytes
) -> str:
    path, _, query = raw_path.partition("?")
    # Every service but S3 encodes the (already encoded) path once more.
    normalized = posixpath.normpath(path) if path not in ("", "/") else "/"
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    canonical_uri = quote(normalized, safe="/~")
    pairs = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
        for k, v in parse_qsl(query, keep_blank_values=True)
    )
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    canonical_headers = "".join(
        f"{name}:{_SPACES.sub(' ', headers[name].strip())}\n" for name in signed
    )
    return "\n".join(
        (
            method,
            canonical_uri,
            canonical_query,
            canonical_headers,
            ";".join(signed),
            _sha256(body),
        )
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    return _hmac(
        _hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), "aws4_request"
    )

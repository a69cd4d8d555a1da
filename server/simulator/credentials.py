"""Credentials the simulator issues and checks: token endpoints, bearer tokens, AWS keys.

Token endpoints, each in its issuer's wire format:

- `POST /{tenant}/oauth2/v2.0/token`: Microsoft Entra ID's client-credentials grant
  (https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow):
  form fields `grant_type=client_credentials`, `client_id`, `client_secret` (the
  simulator's `api_key`, when it has one), `scope`; answers `{"token_type": "Bearer",
  "expires_in", "ext_expires_in", "access_token"}`, or `{"error": "invalid_client",
  "error_description": "AADSTS7000215: ..."}` with 401.
- `POST /token`: Google's OAuth token endpoint for service accounts (a service-account
  key's `token_uri`): `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and an RS256
  `assertion` whose claims name the account (`iss`), the `scope` and `exp`; checked
  against the account's public key when `google_service_accounts` lists it. Answers
  `{"access_token", "expires_in", "token_type": "Bearer"}`, or `{"error":
  "invalid_grant", "error_description"}` with 400.

- `POST /sts` (an STS endpoint, the `endpoint_url` of botocore's STS client):
  `Action=AssumeRoleWithWebIdentity` with a `WebIdentityToken` and a `RoleArn`
  (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html),
  answered in STS's XML with temporary credentials (an access key id, a secret, a session
  token and their `Expiration`), which Bedrock then accepts in SigV4 signatures.

Issued tokens and AWS credentials live `token_lifetime_seconds`; the APIs accept them
(`Authorization: Bearer`, a signature with the key and its `X-Amz-Security-Token`) until
then. `status` fault rules apply to these paths too, answered in the
issuer's error shape. Issued tokens are counted in `issued`, by issuer.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import orjson
from aiohttp import web

from .responses import json_response

if TYPE_CHECKING:
    from .app import Simulator

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class IssuedCredentials:
    """Bearer tokens and AWS credentials the token endpoints issued, with their expiry."""

    def __init__(self) -> None:
        self._tokens: dict[str, float] = {}
        self._aws: dict[str, tuple[str, str, float]] = {}  # key id → (secret, token, expiry)
        self.issued: Counter[str] = Counter()
        self._lock = threading.Lock()  # a test may read from another thread

    def issue(self, issuer: str, lifetime: float) -> str:
        token = f"sim-{issuer}-{secrets.token_urlsafe(24)}"
        now = time.time()
        with self._lock:
            # Expired tokens are forgotten as new ones come: the table stays small.
            for old in [t for t, expiry in self._tokens.items() if expiry < now]:
                del self._tokens[old]
            self._tokens[token] = now + lifetime
            self.issued[issuer] += 1
        return token

    def issue_aws(self, lifetime: float) -> tuple[str, str, str, float]:
        """(access key id, secret, session token, expiry as time.time())."""
        key_id = "ASIASIM" + secrets.token_hex(6).upper()
        secret, token = secrets.token_urlsafe(30), secrets.token_urlsafe(60)
        expiry = time.time() + lifetime
        with self._lock:
            self._aws[key_id] = (secret, token, expiry)
            self.issued["sts"] += 1
        return key_id, secret, token, expiry

    @property
    def aws_issued(self) -> dict[str, tuple[str, str]]:
        """Every AWS key id STS issued, with its secret and session token (expired or not)."""
        with self._lock:
            return {key: (secret, token) for key, (secret, token, _) in self._aws.items()}

    def aws_key(self, key_id: str) -> tuple[str, str] | None:
        """(secret, session token) of unexpired credentials STS issued under `key_id`."""
        found = self._aws.get(key_id)
        if found is None or found[2] < time.time():
            return None
        return found[0], found[1]

    def bearer_problem(self, headers: Mapping[str, str]) -> str | None:
        """None when `Authorization` carries an unexpired token issued here; else why not:
        "missing", "expired" or "invalid"."""
        header = headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return "missing"
        expiry = self._tokens.get(header[7:].strip())
        if expiry is None:
            return "invalid"
        return "expired" if expiry < time.time() else None

    def reset(self) -> None:
        with self._lock:
            self._tokens.clear()
            self._aws.clear()
            self.issued.clear()


def _form(raw: bytes) -> dict[str, str]:
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenEndpoints:
    """The token endpoints' handlers, for one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.entra)
        app.router.add_post("/token", self.google)
        app.router.add_post("/sts", self.sts)
        app.router.add_post("/sts/", self.sts)

    def _lifetime(self) -> float:
        return self.sim.config.token_lifetime_seconds

    def _fault(self, request: web.Request) -> int | None:
        fault = self.sim.faults.take(request.path, None)
        return fault.status if fault is not None and fault.kind == "status" else None

    async def entra(self, request: web.Request) -> web.Response:
        form = _form(await request.read())
        self.sim.stats.record(request.method, request.path, None, request.headers, form)
        status = self._fault(request)
        if status is not None:
            return _oauth_error(status, "temporarily_unavailable", f"simulated error {status}")
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(
                400,
                "unsupported_grant_type",
                "AADSTS70003: The app requested an unsupported grant type.",
            )
        if not form.get("client_id") or not form.get("scope"):
            return _oauth_error(
                400,
                "invalid_request",
                "AADSTS900144: The request body must contain the following parameter: "
                "'client_id' and 'scope'.",
            )
        key = self.sim.config.api_key
        if key is not None and form.get("client_secret") != key:
            return _oauth_error(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
                "in the request is the client secret value, not the client secret ID.",
            )
        lifetime = self._lifetime()
        token = self.sim.credentials.issue("entra", lifetime)
        return json_response(
            orjson.dumps(
                {
                    "token_type": "Bearer",
                    "expires_in": int(lifetime),
                    "ext_expires_in": int(lifetime),
                    "access_token": token,
                }
            )
        )

    async def google(self, request: web.Request) -> web.Response:
        form = _form(await request.read())
        self.sim.stats.record(request.method, request.path, None, request.headers, form)
        status = self._fault(request)
        if status is not None:
            return _oauth_error(status, "internal_failure", f"simulated error {status}")
        if form.get("grant_type") != JWT_BEARER:
            return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type.")
        problem = self._assertion_problem(form.get("assertion", ""))
        if problem is not None:
            return _oauth_error(400, "invalid_grant", problem)
        lifetime = self._lifetime()
        token = self.sim.credentials.issue("google", lifetime)
        return json_response(
            orjson.dumps(
                {"access_token": token, "expires_in": int(lifetime), "token_type": "Bearer"}
            )
        )

    async def sts(self, request: web.Request) -> web.Response:
        form = _form(await request.read())
        self.sim.stats.record(request.method, request.path, None, request.headers, form)
        status = self._fault(request)
        if status is not None:
            return _sts_error(status, "ServiceUnavailable", f"simulated error {status}")
        if form.get("Action") != "AssumeRoleWithWebIdentity":
            return _sts_error(
                400, "InvalidAction", f"Could not find operation {form.get('Action')}"
            )
        if not form.get("WebIdentityToken") or not form.get("RoleArn"):
            return _sts_error(400, "ValidationError", "WebIdentityToken and RoleArn are required")
        key_id, secret, token, expiry = self.sim.credentials.issue_aws(self._lifetime())
        expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))
        role = escape(form["RoleArn"])
        body = (
            '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleWithWebIdentityResult>"
            "<SubjectFromWebIdentityToken>simulator</SubjectFromWebIdentityToken>"
            f"<AssumedRoleUser><Arn>{role}/simulator</Arn>"
            "<AssumedRoleId>AROASIMULATOR:simulator</AssumedRoleId></AssumedRoleUser>"
            f"<Credentials><AccessKeyId>{key_id}</AccessKeyId>"
            f"<SecretAccessKey>{secret}</SecretAccessKey><SessionToken>{token}</SessionToken>"
            f"<Expiration>{expiration}</Expiration></Credentials>"
            "<Provider>simulator</Provider><Audience>sts.amazonaws.com</Audience>"
            "</AssumeRoleWithWebIdentityResult>"
            f"<ResponseMetadata><RequestId>{secrets.token_hex(8)}</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>"
        )
        return web.Response(body=body.encode(), content_type="text/xml")

    def _assertion_problem(self, assertion: str) -> str | None:
        try:
            head, claims_part, signature = assertion.split(".")
            header: Any = orjson.loads(_b64url(head))
            claims: Any = orjson.loads(_b64url(claims_part))
            signed = _b64url(signature)
        except (ValueError, binascii.Error, orjson.JSONDecodeError):
            return "Invalid JWT: not a JSON Web Token."
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            return "Invalid JWT: the algorithm must be RS256."
        if not isinstance(claims, dict) or not claims.get("iss") or not claims.get("scope"):
            return "Invalid JWT: iss and scope are required."
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp < time.time():
            return (
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim."
            )
        pem = self.sim.config.google_service_accounts.get(str(claims["iss"]))
        if self.sim.config.google_service_accounts and pem is None:
            return "Invalid JWT Signature."  # an account the simulator does not know
        if pem is not None and not _rs256_valid(pem, f"{head}.{claims_part}".encode(), signed):
            return "Invalid JWT Signature."
        return None


def _rs256_valid(pem: str, message: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _sts_error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{escape(message)}</Message>"
        f"</Error><RequestId>{secrets.token_hex(8)}</RequestId></ErrorResponse>"
    )
    return web.Response(body=body.encode(), status=status, content_type="text/xml")


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return json_response(
        orjson.dumps({"error": error, "error_description": description}), status=status
    )

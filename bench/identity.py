"""`python -m bench.identity`: what identifying a caller costs, and how fast a revoked key
stops working on every replica.

CPU µs per call of `Authenticator.authenticate` in-process (`time.process_time` over
`--calls` calls, median of `--rounds` rounds) for each source: a config key, an issued
key (after its first lookup), a bearer token already verified (the hot path: a lookup),
and a token's signature check (a cache of one token, alternating two tokens, so every
call verifies). Then three gateways in this process share a real redis-server: a key is
issued through one, used on all three, revoked through the first, and the time until
every replica refuses it is measured, `--revocations` times.
Writes the `## Caller identity` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ai_service.config import CallerGrants, GatewayConfig, parse_config
from ai_service.identity.authenticator import Authenticator, Identities
from ai_service.identity.jwks import Jwks
from ai_service.runtime.gateway import Gateway
from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import (
    CreateKeyRequest,
    KeySpec,
    ListModelsRequest,
    RevokeKeyRequest,
)
from bench import procs, report, stack
from bench.__main__ import written_by

BENCH_DIR = Path(__file__).resolve().parent
HEADING = report.IDENTITY_HEADING
KEY = "bench-key-0123456789"
ADMIN_KEY = "bench-admin-0123456789"
ISSUER, AUDIENCE = "https://idp.bench/", "ai-service"
ALGORITHMS = ("RS256", "ES256", "EdDSA")


class _Response:
    def __init__(self, body: bytes) -> None:
        self.status, self._body = 200, body

    def header(self, name: str) -> str | None:
        return None

    async def read(self) -> bytes:
        return self._body

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        yield self._body


class _StaticKeySet:
    """The HTTP client seam answering with a fixed JWK Set: no provider to reach."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._body = orjson.dumps(document)

    @contextlib.asynccontextmanager
    async def get(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[_Response]:
        yield _Response(self._body)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


def _keys() -> dict[str, Any]:
    return {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }


def _jwk(algorithm: str, key: Any) -> dict[str, Any]:
    public = key.public_key()
    if algorithm == "RS256":
        text = RSAAlgorithm.to_jwk(public)
    elif algorithm == "ES256":
        text = ECAlgorithm.to_jwk(public)
    else:
        text = OKPAlgorithm.to_jwk(public)
    jwk: dict[str, Any] = orjson.loads(text)
    return {**jwk, "kid": algorithm, "alg": algorithm, "use": "sig"}


def _token(algorithm: str, key: Any, subject: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 3600}
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": algorithm})


def _config(*, cached_tokens: int = 100_000, redis_url: str | None = None) -> GatewayConfig:
    tree = stack.gateway_tree("http://127.0.0.1:9")
    tree["auth"] = {
        "keys": [
            {"name": "bench", "key": KEY},
            {"name": "root", "key": ADMIN_KEY, "roles": ["admins"]},
        ],
        "roles": [{"name": "admins", "admin": True}],
        "virtual_keys": {"enabled": True},
        "jwt": {
            "jwks_url": "http://127.0.0.1:9/jwks.json",
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "max_cached_tokens": cached_tokens,
        },
    }
    if redis_url is not None:  # the revocation run: no tokens, a patient Redis client
        del tree["auth"]["jwt"]
        tree["shared_state"] = {"backend": "redis", "redis_url": redis_url, "timeout_ms": 1000}
    return parse_config(tree, env={})


def _authenticator(config: GatewayConfig, key_set: dict[str, Any]) -> Authenticator:
    identities = Identities(None)
    assert config.auth.jwt is not None
    authenticator, _ = identities.access(config)
    assert authenticator is not None and identities.tokens is not None
    identities.tokens.jwks = Jwks(config.auth.jwt, _StaticKeySet(key_set))
    return authenticator


def _bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


async def _cpu_us(call: Callable[[], Awaitable[object]], calls: int, rounds: int) -> float:
    for _ in range(max(calls // 10, 1)):
        await call()
    results = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            await call()
        results.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(results)


async def hot_path(calls: int, rounds: int) -> list[tuple[str, float]]:
    keys = _keys()
    key_set = {"keys": [_jwk(alg, key) for alg, key in keys.items()]}
    cached = _authenticator(_config(), key_set)
    verifying = _authenticator(_config(cached_tokens=1), key_set)
    config_key = _bearer(KEY)
    # An issued key (memory store), looked up once before it is timed.
    identities = Identities(None)
    issued_auth, _ = identities.access(_config())
    assert issued_auth is not None and identities.virtual is not None
    _, secret = await identities.virtual.create("issued", CallerGrants(), None, "bench")
    issued = _bearer(secret)
    rows = [
        (
            "config key (digest lookup)",
            await _cpu_us(lambda: cached.authenticate(config_key), calls, rounds),
        ),
        (
            "issued key, cached",
            await _cpu_us(lambda: issued_auth.authenticate(issued), calls, rounds),
        ),
    ]
    for algorithm in ALGORITHMS:
        token = _bearer(_token(algorithm, keys[algorithm], "alice"))
        us = await _cpu_us(lambda t=token: cached.authenticate(t), calls, rounds)  # type: ignore[misc]
        rows.append((f"JWT {algorithm}, verified before (cache lookup)", us))
    for algorithm in ALGORITHMS:
        pair = [_bearer(_token(algorithm, keys[algorithm], name)) for name in ("a", "b")]
        turn = iter(range(1 << 62))

        def alternate(p: list[Any] = pair, t: Any = turn) -> Awaitable[object]:
            return verifying.authenticate(p[next(t) % 2])

        rows.append(
            (f"JWT {algorithm}, signature checked", await _cpu_us(alternate, calls // 5, rounds))
        )
    for name, us in rows:
        print(f"  {name:<48} {us:8.1f} µs CPU")
    return rows


def _status(address: str, secret: str) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        try:
            ai_service_pb2_grpc.AIServiceStub(channel).ListModels(
                ListModelsRequest(), metadata=_bearer(secret), timeout=5
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def _until(address: str, secret: str, code: grpc.StatusCode) -> None:
    while True:
        if await asyncio.to_thread(_status, address, secret) is code:
            return
        await asyncio.sleep(0.01)


async def revocation(count: int, workdir: Path) -> list[float]:
    """Milliseconds from RevokeKey's answer until all three replicas refuse the key."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = procs.free_port()
    argv = [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    with procs.running(argv, port=port):
        config = _config(redis_url=f"redis://127.0.0.1:{port}/0")
        async with contextlib.AsyncExitStack() as stack_:
            gateways = [await stack_.enter_async_context(Gateway(config)) for _ in range(3)]
            addresses = [gateway.address for gateway in gateways]
            channel = await stack_.enter_async_context(grpc.aio.insecure_channel(addresses[0]))
            admin = ai_service_pb2_grpc.AdminStub(channel)
            delays = []
            for i in range(count):
                created = await admin.CreateKey(
                    CreateKeyRequest(spec=KeySpec(name=f"k{i}")), metadata=_bearer(ADMIN_KEY)
                )
                for address in addresses:  # every replica has it cached
                    await _until(address, created.secret, grpc.StatusCode.OK)
                await admin.RevokeKey(
                    RevokeKeyRequest(id=created.key.id), metadata=_bearer(ADMIN_KEY)
                )
                revoked = time.monotonic()
                pending = set(addresses)
                while pending:
                    for address in list(pending):
                        code = await asyncio.to_thread(_status, address, created.secret)
                        if code is grpc.StatusCode.UNAUTHENTICATED:
                            pending.discard(address)
                delays.append((time.monotonic() - revoked) * 1000)
                print(f"  revocation {i + 1}: refused everywhere after {delays[-1]:.0f} ms")
            return delays


def section(rows: list[tuple[str, float]], delays: list[float], calls: int) -> list[str]:
    return [
        HEADING,
        "",
        f"{written_by('bench.identity')}: CPU µs per call of `Authenticator.authenticate`, "
        f"in-process, median of rounds of {calls} calls (signature checks: a fifth as many). "
        f"A verified token is kept until it expires, so the hot path pays the lookup row, "
        f"not the signature row.",
        "",
        "| identity source | CPU µs per call |",
        "|---|---:|",
        *(f"| {name} | {us:.1f} |" for name, us in rows),
        "",
        f"Revocation across 3 gateways sharing one redis-server (`poll_interval_seconds` "
        f"0.25): from RevokeKey's answer until every replica refuses the key, over "
        f"{len(delays)} revocations: median {statistics.median(delays):.0f} ms, "
        f"max {max(delays):.0f} ms. Each replica reads one version counter every 0.25 s, "
        f"whatever the traffic; no call makes a Redis round trip for a known key.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.identity", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--revocations", type=int, default=10)
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    procs.install_teardown()

    async def run() -> tuple[list[tuple[str, float]], list[float]]:
        rows = await hot_path(args.calls, args.rounds)
        with tempfile.TemporaryDirectory() as workdir:
            delays = await revocation(args.revocations, Path(workdir))
        return rows, delays

    rows, delays = asyncio.run(run())
    report.replace_section(args.output, HEADING, section(rows, delays, args.calls))
    print(f"wrote the caller identity section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

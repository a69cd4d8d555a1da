"""Egress conformance: every HTTP client the config accepts reaches its upstream through
what a company network puts in the way, each case a real gRPC call through a real gateway.

The upstream is the real simulator behind nginx, which terminates TLS with certificates
from a CA made here (one server with a certificate for another name, one that requires
a client certificate), gzips JSON and event streams (so bodies arrive chunked), and
closes keep-alive connections after 3 requests or 1 s idle. Proxies are tinyproxy, with
and without Basic authentication; its log shows what it was asked. A close-delimited
HTTP/1.0 answer comes from a small relay in the test. The refusals at config load are
checked last.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import re
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from ai_service.config import ConfigError, parse_config, with_listen
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.certs import Certificates, encrypted, issue, make_certificates
from tests.clouds import CLOUD_ENV, TENANT, cloud_models, cloud_providers, service_account_file
from tests.conftest import TEST_ENV, TEST_KEY, StartGateway, config_tree, free_port, until
from tests.servers import Tinyproxy, require, running, tinyproxy

CLIENTS = ["h1", "aiohttp", "httpx2", "httpx"]
HELLO = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hello")])
ANSWER = "You said: hello"
PROXY_USER, PROXY_PASSWORD = "gateway-user", "proxy-pass-do-not-leak"
VERSION = importlib.metadata.version("ai-service")

by_client = pytest.mark.parametrize("http_client", CLIENTS)
unary_and_stream = pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])


# -- the servers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    trusted: Certificates  # nginx's certificates come from this CA
    untrusted: Certificates  # another CA, which signed nothing nginx shows
    elsewhere: tuple[Path, Path]  # from the trusted CA, for the name elsewhere.invalid


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    trusted = make_certificates(tmp_path_factory.mktemp("trusted"))
    folder = trusted.ca.parent
    elsewhere = issue(folder, trusted.ca, trusted.ca_key, "elsewhere", "DNS:elsewhere.invalid")
    return Pki(trusted, make_certificates(tmp_path_factory.mktemp("untrusted")), elsewhere)


@dataclass(frozen=True)
class Front:
    """nginx in front of the simulator; one server per TLS situation, and a plain one."""

    https: str  # certificate for 127.0.0.1 and localhost
    wrong_name: str  # certificate for elsewhere.invalid, reached as localhost
    mutual: str  # requires a client certificate from the trusted CA
    http: str  # no TLS; also serves /nginx-status
    access_log: Path

    def log(self, base_url: str) -> list[dict[str, str]]:
        """The requests nginx served on `base_url`'s server, oldest first."""
        port = base_url.rsplit(":", 1)[1].split("/")[0]
        fields = ("port", "connection", "requests", "status", "gzip", "chunked", "ua", "accept")
        entries = []
        for line in self.access_log.read_text(encoding="utf-8").splitlines():
            entry = dict(zip(fields, line.split("|"), strict=True))
            if entry["port"] == port:
                entries.append(entry)
        return entries

    async def served(self, base_url: str, count: int) -> list[dict[str, str]]:
        """The log of `base_url` once it holds `count` requests: nginx writes a request's
        line after its last byte went out, so a caller may be a moment ahead of it."""
        await until(lambda: len(self.log(base_url)) >= count, f"{count} requests logged")
        return self.log(base_url)

    def active_connections(self) -> int:
        with urllib.request.urlopen(f"{self.http}/nginx-status", timeout=5) as answer:
            status: str = answer.read().decode()
        return int(re.search(r"Active connections: (\d+)", status)[1])  # type: ignore[index]


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    log_format egress '$server_port|$connection|$connection_requests|$status|$gzip_ratio|'
                      '$sent_http_transfer_encoding|$http_user_agent|$http_accept_encoding';
    access_log {dir}/access.log egress;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    gzip on;
    gzip_types text/event-stream application/json;
    gzip_proxied any;
    gzip_min_length 1;
    keepalive_requests 3;
    keepalive_timeout 1s;
    proxy_http_version 1.1;
    proxy_buffering off;
    ssl_protocols TLSv1.2 TLSv1.3;

    server {{
        listen 127.0.0.1:{https} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ proxy_pass http://127.0.0.1:{upstream}; }}
    }}
    server {{
        listen 127.0.0.1:{wrong_name} ssl;
        ssl_certificate {elsewhere_cert};
        ssl_certificate_key {elsewhere_key};
        location / {{ proxy_pass http://127.0.0.1:{upstream}; }}
    }}
    server {{
        listen 127.0.0.1:{mutual} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_verify_client on;
        ssl_client_certificate {ca};
        location / {{ proxy_pass http://127.0.0.1:{upstream}; }}
    }}
    server {{
        listen 127.0.0.1:{http};
        location /nginx-status {{ stub_status; access_log off; }}
        location / {{ proxy_pass http://127.0.0.1:{upstream}; }}
    }}
}}
"""


@pytest.fixture
def front(simulator: Simulator, pki: Pki, tmp_path: Path) -> Iterator[Front]:
    binary = require("nginx")
    folder = tmp_path / "nginx"
    folder.mkdir()
    ports = {name: free_port() for name in ("https", "wrong_name", "mutual", "http")}
    config = folder / "nginx.conf"
    config.write_text(
        NGINX_CONF.format(
            dir=folder,
            upstream=simulator.port,
            cert=pki.trusted.server_cert,
            key=pki.trusted.server_key,
            ca=pki.trusted.ca,
            elsewhere_cert=pki.elsewhere[0],
            elsewhere_key=pki.elsewhere[1],
            **ports,
        ),
        encoding="utf-8",
    )
    argv = [binary, "-c", str(config), "-p", str(folder), "-e", str(folder / "error.log")]
    with running(argv, ports["http"], "nginx"):
        yield Front(
            https=f"https://127.0.0.1:{ports['https']}",
            wrong_name=f"https://localhost:{ports['wrong_name']}",
            mutual=f"https://127.0.0.1:{ports['mutual']}",
            http=f"http://127.0.0.1:{ports['http']}",
            access_log=folder / "access.log",
        )


StartProxy = Callable[..., Tinyproxy]


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[StartProxy]:
    """Start a tinyproxy; `auth=True` requires PROXY_USER / PROXY_PASSWORD."""
    with ExitStack() as stack:

        def start(*, auth: bool = False) -> Tinyproxy:
            folder = tmp_path / f"proxy-{free_port()}"
            credentials = (PROXY_USER, PROXY_PASSWORD) if auth else None
            return stack.enter_context(tinyproxy(free_port(), folder, credentials))

        yield start


# -- the gateway and its calls ---------------------------------------------------------


async def gateway_to(
    start_gateway: StartGateway,
    base_url: str,
    http_client: str,
    *,
    egress: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Gateway:
    """A gateway whose one provider is `base_url` (+ /v1), reached with `http_client`."""
    tree = config_tree(base_url)
    tree["providers"][0]["http_client"] = http_client
    if egress is not None:
        tree["providers"][0]["egress"] = egress
    if defaults is not None:
        tree["egress"] = defaults
    return await start_gateway(parse_config(tree, env={**TEST_ENV, **(env or {})}))


async def ask(gateway: Gateway, streamed: bool) -> str:
    """One call's answer text; raises AIServiceError."""
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        if streamed:
            chunks = [chunk async for chunk in client.stream_chat(HELLO)]
            assert chunks[-1].choices[0].finish_reason == "stop"
            return "".join(c.choices[0].delta.content for c in chunks if c.choices)
        response = await client.chat(HELLO)
        return response.choices[0].message.content


async def refused(gateway: Gateway, streamed: bool = False) -> AIServiceError:
    with pytest.raises(AIServiceError) as caught:
        await ask(gateway, streamed)
    return caught.value


def warned(caplog: pytest.LogCaptureFixture, cause: str) -> bool:
    """Whether a WARNING told of a failed upstream connection with `cause` in it."""
    return any(
        r.levelno == logging.WARNING and cause in str(getattr(r, "cause", ""))
        for r in caplog.records
    )


def no_secret_in(text: str) -> None:
    assert PROXY_PASSWORD not in text and PROXY_USER not in text


# -- TLS -------------------------------------------------------------------------------


@by_client
@unary_and_stream
async def test_a_private_ca_is_trusted_and_gzip_chunked_answers_are_decoded(
    start_gateway: StartGateway, front: Front, pki: Pki, http_client: str, streamed: bool
) -> None:
    gateway = await gateway_to(
        start_gateway,
        front.https,
        http_client,
        egress={"tls": {"ca_file": str(pki.trusted.ca)}},
    )
    assert await ask(gateway, streamed) == ANSWER
    (served,) = await front.served(front.https, 1)
    assert served["status"] == "200"
    assert served["gzip"] != "-"  # nginx compressed the answer ...
    assert served["chunked"] == "chunked"  # ... so it had no length
    assert "gzip" in served["accept"]
    assert served["ua"].startswith("ai-service/")


@by_client
async def test_an_upstream_whose_ca_is_not_trusted_is_refused_with_the_cause(
    start_gateway: StartGateway,
    front: Front,
    pki: Pki,
    http_client: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = await gateway_to(
        start_gateway, front.https, http_client, egress={"tls": {"ca_file": str(pki.untrusted.ca)}}
    )
    error = await refused(gateway)
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert "certificate verify failed: unable to get local issuer certificate" in error.message
    assert warned(caplog, "certificate verify failed")
    assert front.log(front.https) == []  # no request went out


@by_client
async def test_a_certificate_for_another_name_is_refused_with_the_cause(
    start_gateway: StartGateway,
    front: Front,
    pki: Pki,
    http_client: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = await gateway_to(
        start_gateway,
        front.wrong_name,
        http_client,
        egress={"tls": {"ca_file": str(pki.trusted.ca)}},
    )
    error = await refused(gateway)
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert "Hostname mismatch" in error.message and "localhost" in error.message
    assert warned(caplog, "Hostname mismatch")


@by_client
async def test_verify_false_accepts_any_certificate_and_is_warned_about_at_start(
    start_gateway: StartGateway, front: Front, http_client: str, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gateway_to(
        start_gateway, front.wrong_name, http_client, defaults={"tls": {"verify": False}}
    )
    assert any(
        r.levelno == logging.WARNING and "verification of the upstream is OFF" in r.getMessage()
        for r in caplog.records
    )
    assert await ask(gateway, streamed=False) == ANSWER


@by_client
@unary_and_stream
async def test_a_client_certificate_is_shown_to_an_upstream_that_requires_one(
    start_gateway: StartGateway, front: Front, pki: Pki, http_client: str, streamed: bool
) -> None:
    tls = {
        "ca_file": str(pki.trusted.ca),
        "cert_file": str(pki.trusted.client_cert),
        "key_file": str(pki.trusted.client_key),
    }
    gateway = await gateway_to(start_gateway, front.mutual, http_client, egress={"tls": tls})
    assert await ask(gateway, streamed) == ANSWER
    assert [e["status"] for e in await front.served(front.mutual, 1)] == ["200"]


@by_client
async def test_without_a_client_certificate_the_upstream_refuses(
    start_gateway: StartGateway, front: Front, pki: Pki, http_client: str
) -> None:
    gateway = await gateway_to(
        start_gateway, front.mutual, http_client, egress={"tls": {"ca_file": str(pki.trusted.ca)}}
    )
    error = await refused(gateway)
    # nginx answers "400 No required SSL certificate was sent": a refusal of the request.
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [e["status"] for e in await front.served(front.mutual, 1)] == ["400"]


@by_client
@pytest.mark.parametrize("own", [None, "corp-gateway/2"], ids=["default", "provider's"])
async def test_every_request_names_the_gateway_and_asks_for_gzip(
    start_gateway: StartGateway, simulator: Simulator, http_client: str, own: str | None
) -> None:
    tree = config_tree(simulator.base_url)
    tree["providers"][0].update(http_client=http_client, headers={"User-Agent": own} if own else {})
    gateway = await start_gateway(parse_config(tree, env=TEST_ENV))
    for streamed in (False, True):
        assert await ask(gateway, streamed) == ANSWER
        headers = simulator.stats.received[-1].headers
        assert headers.getall("user-agent") == [own or f"ai-service/{VERSION}"]
        assert headers["accept-encoding"] == "gzip"


# -- keep-alive and HTTP/1.x bodies ----------------------------------------------------


@by_client
async def test_calls_go_on_when_the_upstream_closes_after_n_requests(
    start_gateway: StartGateway, front: Front, pki: Pki, http_client: str
) -> None:
    gateway = await gateway_to(
        start_gateway, front.https, http_client, egress={"tls": {"ca_file": str(pki.trusted.ca)}}
    )
    # Unary calls first: a stream's connection is kept only if its client reads past the
    # end marker to the end of the body, which not every client does.
    for streamed in (False,) * 6 + (True,):
        assert await ask(gateway, streamed) == ANSWER
    served = await front.served(front.https, 7)
    assert [e["status"] for e in served] == ["200"] * 7
    # nginx's keepalive_requests: no connection served more than 3, so 7 calls took 3 or
    # more (a slow moment may let the 1 s idle close come first).
    assert max(int(e["requests"]) for e in served) <= 3
    assert len({e["connection"] for e in served}) >= 3


@by_client
async def test_calls_go_on_after_the_upstream_closed_an_idle_connection(
    start_gateway: StartGateway, front: Front, pki: Pki, http_client: str
) -> None:
    gateway = await gateway_to(
        start_gateway, front.https, http_client, egress={"tls": {"ca_file": str(pki.trusted.ca)}}
    )
    assert await ask(gateway, streamed=False) == ANSWER
    # nginx's keepalive_timeout: only the status request's own connection stays.
    await until(lambda: front.active_connections() == 1, "nginx to close the idle connection")
    assert await ask(gateway, streamed=True) == ANSWER
    first, second = await front.served(front.https, 2)
    assert first["connection"] != second["connection"]


@pytest.fixture
async def http10_relay(simulator: Simulator) -> AsyncIterator[tuple[str, list[int]]]:
    """An HTTP/1.0 upstream: the simulator's answer, relayed with neither a length nor
    chunks, ended by closing the connection. Yields its base URL and a served counter."""
    served = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        headers = {name.lower(): value for name, value in headers.items()}
        body = await reader.readexactly(int(headers["content-length"]))
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{simulator.base_url}{path}",
                data=body,
                headers={"authorization": headers["authorization"]},
            ) as answer,
        ):
            kind = answer.headers["content-type"]
            writer.write(f"HTTP/1.0 200 OK\r\ncontent-type: {kind}\r\n\r\n".encode())
            async for piece in answer.content.iter_any():
                writer.write(piece)
                await writer.drain()
        served[0] += 1
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", served
    server.close()
    await server.wait_closed()


@by_client
@unary_and_stream
async def test_an_http10_answer_delimited_by_the_close_is_read_whole(
    start_gateway: StartGateway,
    http10_relay: tuple[str, list[int]],
    http_client: str,
    streamed: bool,
) -> None:
    base_url, served = http10_relay
    gateway = await gateway_to(start_gateway, base_url, http_client)
    for _ in range(2):  # the second on a new connection: the first one ended its answer
        assert await ask(gateway, streamed) == ANSWER
    assert served == [2]


# -- proxies ---------------------------------------------------------------------------


@by_client
@unary_and_stream
async def test_https_goes_through_a_proxy_tunnel(
    start_gateway: StartGateway,
    front: Front,
    pki: Pki,
    start_proxy: StartProxy,
    http_client: str,
    streamed: bool,
) -> None:
    proxy = start_proxy()
    egress = {"proxy": proxy.url(), "tls": {"ca_file": str(pki.trusted.ca)}}
    gateway = await gateway_to(start_gateway, front.https, http_client, egress=egress)
    assert await ask(gateway, streamed) == ANSWER
    authority = front.https.removeprefix("https://")
    assert f"CONNECT {authority} HTTP/1.1" in proxy.requests()
    assert len(await front.served(front.https, 1)) == 1


@by_client
@unary_and_stream
async def test_http_is_forwarded_by_the_proxy(
    start_gateway: StartGateway,
    front: Front,
    start_proxy: StartProxy,
    http_client: str,
    streamed: bool,
) -> None:
    proxy = start_proxy()
    gateway = await gateway_to(
        start_gateway, front.http, http_client, egress={"proxy": proxy.url()}
    )
    assert await ask(gateway, streamed) == ANSWER
    assert f"POST {front.http}/v1/chat/completions HTTP/1.1" in proxy.requests()


def upstream_of(scheme: str, front: Front) -> str:
    return front.https if scheme == "https" else front.http


def tls_for(scheme: str, pki: Pki) -> dict[str, Any]:
    return {"tls": {"ca_file": str(pki.trusted.ca)}} if scheme == "https" else {}


@by_client
@pytest.mark.parametrize("scheme", ["https", "http"])
async def test_proxy_credentials_from_the_environment_are_accepted(
    start_gateway: StartGateway,
    front: Front,
    pki: Pki,
    start_proxy: StartProxy,
    http_client: str,
    scheme: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = start_proxy(auth=True)
    egress = {
        "proxy": f"http://${{PROXY_USER}}:${{PROXY_PASSWORD}}@127.0.0.1:{proxy.port}",
        **tls_for(scheme, pki),
    }
    env = {"PROXY_USER": PROXY_USER, "PROXY_PASSWORD": PROXY_PASSWORD}
    gateway = await gateway_to(
        start_gateway, upstream_of(scheme, front), http_client, egress=egress, env=env
    )
    for streamed in (False, True):
        assert await ask(gateway, streamed) == ANSWER
    assert len(proxy.requests()) >= 1
    no_secret_in(caplog.text)


@by_client
@pytest.mark.parametrize(
    ("scheme", "credentials", "status"),
    [
        ("https", "missing", "407 Proxy Authentication Required"),
        ("http", "missing", "407 Proxy Authentication Required"),
        # tinyproxy answers wrong credentials 401, not 407: on a CONNECT that can only be
        # the proxy's answer. (Forwarding an http request, such a 401 cannot be told from
        # the upstream's own, so that case is not here.)
        ("https", "wrong", "401 Unauthorized"),
    ],
)
async def test_a_proxy_that_wants_credentials_is_unavailable_with_its_answer(
    start_gateway: StartGateway,
    front: Front,
    pki: Pki,
    start_proxy: StartProxy,
    http_client: str,
    scheme: str,
    credentials: str,
    status: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = start_proxy(auth=True)
    auth = (PROXY_USER, PROXY_PASSWORD[::-1] + "x") if credentials == "wrong" else None
    egress = {"proxy": proxy.url(auth), **tls_for(scheme, pki)}
    gateway = await gateway_to(
        start_gateway, upstream_of(scheme, front), http_client, egress=egress
    )
    for streamed in (False, True):
        error = await refused(gateway, streamed)
        assert error.code is grpc.StatusCode.UNAVAILABLE
        assert f"proxy 127.0.0.1:{proxy.port} requires authentication ({status})" in error.message
        assert f"credentials {credentials}" in error.message
        no_secret_in(error.message)
    assert warned(caplog, f"requires authentication ({status})")
    no_secret_in(caplog.text)
    assert front.log(upstream_of(scheme, front)) == []  # the upstream never heard of it


@by_client
async def test_a_proxy_that_refuses_connections_is_named_as_the_cause(
    start_gateway: StartGateway,
    front: Front,
    pki: Pki,
    http_client: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = free_port()
    egress = {"proxy": f"http://127.0.0.1:{dead}", "tls": {"ca_file": str(pki.trusted.ca)}}
    gateway = await gateway_to(start_gateway, front.https, http_client, egress=egress)
    error = await refused(gateway)
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert f"proxy 127.0.0.1:{dead} refused the connection" in error.message
    assert warned(caplog, f"proxy 127.0.0.1:{dead} refused the connection")


@by_client
async def test_an_upstream_that_refuses_connections_is_named_as_the_cause(
    start_gateway: StartGateway, http_client: str, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gateway_to(start_gateway, f"http://127.0.0.1:{free_port()}", http_client)
    error = await refused(gateway)
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert "upstream refused the connection (connection refused)" in error.message
    assert warned(caplog, "connection refused")


@by_client
@pytest.mark.parametrize(
    ("variables", "egress", "through_proxy"),
    [
        ({"HTTPS_PROXY": "{proxy}"}, {}, True),
        ({"https_proxy": "{proxy}"}, {}, True),
        ({"HTTPS_PROXY": "{proxy}", "NO_PROXY": "localhost,127.0.0.1"}, {}, False),
        ({"https_proxy": "{proxy}", "no_proxy": ".example.com,127.0.0.1"}, {}, False),
        ({"HTTPS_PROXY": "{proxy}"}, {"trust_env": False}, False),
        ({"HTTPS_PROXY": "{proxy}"}, {"proxy": "direct"}, False),
        ({"HTTP_PROXY": "{proxy}"}, {}, False),  # an https upstream reads HTTPS_PROXY only
    ],
    ids=[
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "trust_env-false",
        "direct",
        "HTTP_PROXY",
    ],
)
async def test_the_environment_proxy_is_honoured_unless_exempted_or_ignored(
    start_gateway: StartGateway,
    front: Front,
    pki: Pki,
    start_proxy: StartProxy,
    http_client: str,
    variables: dict[str, str],
    egress: dict[str, Any],
    through_proxy: bool,
) -> None:
    proxy = start_proxy()
    env = {name: value.format(proxy=proxy.url()) for name, value in variables.items()}
    egress = {**egress, "tls": {"ca_file": str(pki.trusted.ca)}}
    gateway = await gateway_to(start_gateway, front.https, http_client, egress=egress, env=env)
    for streamed in (False, True):
        assert await ask(gateway, streamed) == ANSWER
    tunnels = [line for line in proxy.requests() if line.startswith("CONNECT")]
    assert bool(tunnels) is through_proxy


@by_client
async def test_a_configured_proxy_wins_over_the_environment(
    start_gateway: StartGateway,
    front: Front,
    start_proxy: StartProxy,
    http_client: str,
) -> None:
    configured, from_env = start_proxy(), start_proxy()
    gateway = await gateway_to(
        start_gateway,
        front.http,
        http_client,
        defaults={"proxy": configured.url()},
        env={"HTTP_PROXY": from_env.url()},
    )
    assert await ask(gateway, streamed=False) == ANSWER
    assert configured.requests() and from_env.requests() == []


# -- refused at config load ------------------------------------------------------------


def provider_tree(egress: dict[str, Any], base_url: str = "https://upstream.example") -> Any:
    tree = config_tree(base_url)
    tree["providers"][0]["egress"] = egress
    return tree


@pytest.mark.parametrize(
    ("egress", "env", "message"),
    [
        (
            {"proxy": f"https://{PROXY_USER}:{PROXY_PASSWORD}@proxy:3128"},
            {},
            "providers[0].egress.proxy: a https:// proxy is not supported",
        ),
        (
            {"proxy": "socks5://proxy:1080"},
            {},
            "providers[0].egress.proxy: a socks5:// proxy is not supported",
        ),
        ({"proxy": "${NO_SUCH:-}"}, {}, "providers[0].egress.proxy: is empty"),
        (
            {"proxy": "http://proxy:3128/path"},
            {},
            "providers[0].egress.proxy: the proxy URL has a path",
        ),
        (
            {},
            {"HTTPS_PROXY": f"https://{PROXY_USER}:{PROXY_PASSWORD}@proxy:3128"},
            "providers[0].egress.proxy: HTTPS_PROXY from the environment: a https:// proxy",
        ),
        (
            {"tls": {"ca_file": "/nonexistent/ca.pem"}},
            {},
            "providers[0].egress.tls: ca_file: cannot read /nonexistent/ca.pem",
        ),
        (
            {"tls": {"verify": False, "ca_file": "{ca}"}},
            {},
            "providers[0].egress.tls: ca_file: has no use with verify: false",
        ),
        (
            {"tls": {"key_file": "{key}"}},
            {},
            "providers[0].egress.tls: key_file: given without cert_file",
        ),
        (
            {"tls": {"cert_file": "{cert}", "key_file": "{other_key}"}},
            {},
            "providers[0].egress.tls: cert_file: cannot use",
        ),
        (
            {"tls": {"cert_file": "{cert}", "key_file": "{encrypted_key}"}},
            {},
            "providers[0].egress.tls: cert_file: cannot use",
        ),
        ({"tls": {"verfy": False}}, {}, "providers[0].egress.tls.verfy: Extra inputs"),
    ],
)
def test_egress_settings_that_cannot_work_are_refused_at_load(
    pki: Pki, egress: dict[str, Any], env: dict[str, str], message: str
) -> None:
    files = {
        "ca": str(pki.trusted.ca),
        "key": str(pki.trusted.client_key),
        "cert": str(pki.trusted.client_cert),
        "other_key": str(pki.untrusted.client_key),
        "encrypted_key": str(encrypted(pki.trusted.client_key, "a passphrase")),
    }
    tls = {
        k: v.format(**files) if isinstance(v, str) else v for k, v in egress.get("tls", {}).items()
    }
    tree = provider_tree({**egress, "tls": tls} if "tls" in egress else egress)
    with pytest.raises(ConfigError) as caught:
        parse_config(tree, env={**TEST_ENV, **env})
    assert message in str(caught.value)
    no_secret_in(str(caught.value))


def test_tls_settings_on_a_plain_http_provider_are_refused_not_ignored(pki: Pki) -> None:
    tree = provider_tree({"tls": {"ca_file": str(pki.trusted.ca)}}, "http://upstream.example")
    with pytest.raises(ConfigError, match=r"providers\[0\]\.egress\.tls: base_url is http://"):
        parse_config(tree, env=TEST_ENV)
    tree = provider_tree({}, "http://upstream.example")
    tree["egress"] = {"tls": {"ca_file": str(pki.trusted.ca)}}  # defaults: for https ones
    config = parse_config(tree, env=TEST_ENV)
    assert config.providers[0].egress.tls.ca_file is None
    # Checked again as a whole (as a reload or --listen does), it still holds.
    assert with_listen(config, "127.0.0.1:0").providers == config.providers


def test_a_provider_overrides_the_defaults_in_pairs(pki: Pki) -> None:
    tree = provider_tree({"tls": {"verify": False}, "trust_env": False})
    tree["egress"] = {
        "proxy": "http://proxy:3128",
        "tls": {
            "ca_file": str(pki.trusted.ca),
            "cert_file": str(pki.trusted.client_cert),
            "key_file": str(pki.trusted.client_key),
        },
    }
    config = parse_config(tree, env=TEST_ENV)
    assert with_listen(config, "127.0.0.1:0").providers == config.providers  # idempotent
    egress = config.providers[0].egress
    assert egress.proxy_url == "http://proxy:3128"
    assert egress.tls.verify is False and egress.tls.ca_file is None  # trust: the provider's
    assert egress.tls.cert_file == str(pki.trusted.client_cert)  # identity: the defaults'


# -- the clouds' token endpoints --------------------------------------------------------

TOKEN_MODELS = ("sim-azure-entra", "sim-vertex", "sim-vertex-claude")


def clouds_through(
    front_url: str, simulator: Simulator, folder: Path, egress: dict[str, Any]
) -> dict[str, Any]:
    """A config tree of the cloud providers behind `front_url` (token endpoints and APIs
    alike), each with `egress`."""
    credentials = service_account_file(folder, simulator, token_origin=front_url)
    tree = config_tree(front_url)
    tree["providers"] = cloud_providers(front_url, credentials)
    for provider in tree["providers"]:
        provider["egress"] = egress
    tree["models"] = cloud_models()
    tree["auth"] = {"keys": [{"name": "tester", "key": TEST_KEY}]}
    tree["resilience"] = {"retries": {"max_attempts": 1}}
    return tree


async def say_hi(gateway: Gateway, model: str) -> str:
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        request = ChatCompletionRequest(model=model, messages=[Message(role="user", content="hi")])
        return (await client.chat(request)).choices[0].message.content


async def test_a_private_ca_is_trusted_by_the_token_endpoints_too(
    start_gateway: StartGateway, front: Front, pki: Pki, simulator: Simulator, tmp_path: Path
) -> None:
    tls = {"tls": {"ca_file": str(pki.trusted.ca)}}
    trusting = await start_gateway(
        parse_config(clouds_through(front.https, simulator, tmp_path, tls), env=CLOUD_ENV)
    )
    for model in TOKEN_MODELS:
        assert await say_hi(trusting, model) == "You said: hi"
    assert simulator.credentials.issued["entra"] == 1
    assert simulator.credentials.issued["google"] == 2
    # Without the CA, the token endpoints' certificates are refused: the calls fail.
    tree = clouds_through(front.https, simulator, tmp_path, {})
    distrusting = await start_gateway(parse_config(tree, env=CLOUD_ENV))
    for model, token in (("sim-azure-entra", "Microsoft Entra ID"), ("sim-vertex", "Google OAuth")):
        with pytest.raises(AIServiceError) as caught:
            await say_hi(distrusting, model)
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        assert f"the {token} " in caught.value.message
        assert "certificate verify failed" in caught.value.message.lower().replace("_", " ")


async def test_token_endpoints_and_sts_are_reached_through_the_proxy(
    start_gateway: StartGateway,
    simulator: Simulator,
    start_proxy: StartProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance to ask here
    proxy = start_proxy()
    # Straight to the simulator through the proxy: a forward proxy keeps the Host that
    # Bedrock's signature covers (a reverse proxy such as nginx would rewrite it).
    origin = simulator.base_url
    tree = clouds_through(origin, simulator, tmp_path, {"proxy": proxy.url()})
    # Bedrock's credentials from web identity: botocore asks STS, through the proxy too.
    (tmp_path / "token").write_text("a-web-identity-token")
    (tmp_path / "aws-config").write_text(
        "[profile eks]\nrole_arn = arn:aws:iam::123456789012:role/gateway\n"
        f"web_identity_token_file = {tmp_path / 'token'}\nservices = through-front\n\n"
        f"[services through-front]\nsts =\n  endpoint_url = {origin}/sts\n"
    )
    (tmp_path / "aws-credentials").write_text("")
    (bedrock,) = [p for p in tree["providers"] if p["kind"] == "bedrock"]
    bedrock["bedrock"] = {
        "region": "us-east-1",
        "profile": "eks",
        "config_file": str(tmp_path / "aws-config"),
        "credentials_file": str(tmp_path / "aws-credentials"),
    }
    gateway = await start_gateway(parse_config(tree, env=CLOUD_ENV))
    for model in (*TOKEN_MODELS, "sim-bedrock"):
        assert await say_hi(gateway, model) == "You said: hi"
    asked = proxy.requests()
    for path in (f"/{TENANT}/oauth2/v2.0/token", "/token", "/sts", "/model/"):
        assert any(line.startswith(f"POST {origin}{path}") for line in asked), (path, asked)

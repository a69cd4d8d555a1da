"""Which HTTP server for the HTTP door: CPU µs per request of each candidate, bare.

Each candidate serves one route the way the door would (read the body, parse it as
JSON, look at the authorization header, answer a chat completion's JSON) on uvloop, in
a process of its own; h2load --h1 sends it a fixed number of requests over 32
connections, and the server process's CPU (utime + stime) is divided by them. Rounds
interleave the candidates; the median is kept.

    python -m bench.http_servers [--requests 20000] [--rounds 3]

Run with `--serve KIND PORT` it is one of the candidates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from bench import h2load, procs
from bench.h2load import Load
from bench.procs import LOOPBACK, PYTHON, free_port, running

BENCH_DIR = Path(__file__).resolve().parent
KINDS = {
    "aiohttp, web.Application": "aiohttp-app",
    "aiohttp, low-level web.Server": "aiohttp-low",
    "uvicorn + httptools, bare ASGI": "uvicorn",
}
CONNECTIONS = 32
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello " * 16},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 16, "total_tokens": 19},
    }
)


def serve(kind: str, port: int) -> None:
    """Run one candidate until killed."""
    import uvloop

    if kind.startswith("aiohttp"):
        from aiohttp import web

        async def handle(request: web.BaseRequest) -> web.Response:
            orjson.loads(await request.read())
            assert request.headers.get("authorization")
            return web.Response(body=ANSWER, content_type="application/json")

        async def main() -> None:
            runner: web.BaseRunner
            if kind == "aiohttp-app":
                app = web.Application()
                app.router.add_post("/v1/chat/completions", handle)
                runner = web.AppRunner(app, access_log=None)
            else:
                runner = web.ServerRunner(web.Server(handle, access_log=None))
            await runner.setup()
            await web.TCPSite(runner, LOOPBACK, port).start()
            await asyncio.Event().wait()

        uvloop.run(main())
        return

    import uvicorn

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        orjson.loads(b"".join(chunks))
        assert any(name == b"authorization" for name, _ in scope["headers"])
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": ANSWER})

    uvicorn.run(
        app,
        host=LOOPBACK,
        port=port,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


@contextlib.contextmanager
def candidate(kind: str, workdir: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    argv = [PYTHON, "-m", "bench.http_servers", "--serve", kind, str(port)]
    with running(argv, port=port, log=workdir / f"http-server-{kind}.log") as proc:
        yield port, proc.pid


def measure(port: int, pid: int, requests: int, workdir: Path, label: str) -> float | None:
    body = workdir / "http-server-body.json"
    body.write_text('{"model":"m","messages":[{"role":"user","content":"hello"}]}')
    load = Load(
        url=f"http://{LOOPBACK}:{port}/v1/chat/completions",
        body=body,
        headers=("content-type: application/json", "authorization: Bearer k"),
        clients=CONNECTIONS,
        streams_per_client=1,
        duration=0,
        warmup=0,
        h1=True,
        calls=requests,
    )
    before = procs.cpu_seconds(pid)
    result = h2load.run(label, load, workdir)
    if not result.ok or result.succeeded != requests:
        print(f"  {label}: {result.succeeded}/{requests} {result.error}", flush=True)
        return None
    return (procs.cpu_seconds(pid) - before) / requests * 1e6


def run(requests: int, rounds: int, workdir: Path) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {name: [] for name in KINDS}
    with contextlib.ExitStack() as started:
        servers = {name: started.enter_context(candidate(k, workdir)) for name, k in KINDS.items()}
        for name, (port, pid) in servers.items():
            measure(port, pid, requests // 4, workdir, f"warm {name}")
        for _ in range(rounds):
            for name, (port, pid) in servers.items():
                spent = measure(port, pid, requests, workdir, name)
                if spent is not None:
                    found[name].append(spent)
            print("  ".join(f"{n[:20]} {v[-1]:.0f}" for n, v in found.items() if v), flush=True)
    return found


def section_rows(found: dict[str, list[float]]) -> list[str]:
    rows = ["| server (bare, one route) | CPU µs per request | rounds |", "|---|---:|---|"]
    for name, values in found.items():
        median = f"{statistics.median(values):.0f}" if values else "failed"
        rows.append(f"| {name} | {median} | {', '.join(f'{v:.0f}' for v in values)} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.http_servers", description=__doc__.split("\n")[0])
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    procs.install_teardown()
    workdir = BENCH_DIR / ".work"
    workdir.mkdir(exist_ok=True)
    try:
        found = run(args.requests, args.rounds, workdir)
    finally:
        procs.stop_all()
    print("\n".join(section_rows(found)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU per upstream request of each HTTP client behind the provider seam, alone.

`python -m bench.http_seam --url http://127.0.0.1:PORT --client h1` posts the unary
benchmark body to the simulator through `create_http_client` (the gateway's own code
path, no gRPC in front) at a fixed concurrency, and prints one JSON line: requests per
second and the process CPU microseconds per request. Section 4 runs it for every client
against the same simulator, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

from ai_service.config import ProviderSettings
from ai_service.providers.egress import upstream_headers
from ai_service.providers.http import create_http_client
from bench.stack import openai_body

# What an adapter sends (User-Agent and Accept-Encoding: gzip included).
HEADERS = upstream_headers({"content-type": "application/json", "accept": "application/json"})


async def measure(url: str, client_name: str, requests: int, concurrency: int) -> dict[str, float]:
    settings = ProviderSettings.model_validate(
        {"name": "bench", "base_url": f"{url}/v1", "http_client": client_name}
    )
    client = create_http_client(settings)
    body = orjson.dumps(openai_body())
    target = f"{url}/v1/chat/completions"
    left = 0

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with client.post(target, body, HEADERS) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"simulator answered {response.status}")

    async def round_of(n: int) -> None:
        nonlocal left
        left = n
        await asyncio.gather(*(worker() for _ in range(concurrency)))

    try:
        await round_of(max(concurrency, requests // 10))  # warm-up: connections, caches
        cpu, wall = time.process_time(), time.perf_counter()
        await round_of(requests)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.aclose()
    return {"rps": requests / wall, "cpu_us": cpu / requests * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.http_seam", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the simulator's origin")
    parser.add_argument("--client", required=True)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(measure(args.url, args.client, args.requests, args.concurrency))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()

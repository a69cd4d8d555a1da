"""The same unary work sent straight to the simulator: h2load in HTTP/1.1 mode (`--h1`).

One request per connection at a time (no pipelining), so `clients` is the concurrency,
like `clients * streams` on the gRPC side. The body is the OpenAI JSON the gateway itself
would send for the same prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.h2load import Load
from bench.stack import Endpoint, openai_body


def http_unary_load(
    sim: Endpoint,
    workdir: Path,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    rate: float | None = None,
    url: str | None = None,
    headers: tuple[str, ...] = (),
    model: str | None = None,
) -> Load:
    body_file = workdir / f"unary-{model or 'sim'}.json"
    body = openai_body()
    if model:
        body["model"] = model
    body_file.write_text(json.dumps(body), encoding="utf-8")
    return Load(
        url=url or f"{sim.http}/v1/chat/completions",
        body=body_file,
        headers=("content-type: application/json", *headers),
        clients=concurrency,
        streams_per_client=1,
        duration=duration,
        warmup=warmup,
        rate=rate,
        h1=True,
    )

"""grpc-status of a sample of calls through the project's own client (h2load cannot see it).

Runs beside an h2load run, at low concurrency and a bounded rate, for a bounded time, and
returns the count of each status code name ("OK", "UNAVAILABLE", ...).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from ai_service_client import AIServiceError, AsyncAIClient
from bench.stack import chat_request


async def sample_statuses(
    target: str,
    api_key: str | None,
    *,
    seconds: float,
    concurrency: int = 2,
    per_second: float = 40.0,
    max_calls: int = 2_000,
    timeout: float = 10.0,  # noqa: ASYNC109 (each call's gRPC deadline, sent to the server)
    calls: list[tuple[str, float]] | None = None,
) -> dict[str, int]:
    """Status name → count; each call's (status, seconds) also goes to `calls` if given."""
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    interval = concurrency / per_second
    request = chat_request()
    async with AsyncAIClient(target, api_key, timeout=timeout) as client:

        async def worker() -> None:
            while time.monotonic() < deadline and sum(counts.values()) < max_calls:
                started = time.monotonic()
                try:
                    await client.chat(request)
                    status = "OK"
                except AIServiceError as error:
                    status = error.code.name
                except Exception as error:  # a transport failure is a finding too
                    status = type(error).__name__
                counts[status] += 1
                if calls is not None:
                    calls.append((status, time.monotonic() - started))
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return dict(counts)

"""grpc-status of a sample of calls through the project's own client (h2load cannot see it).

Runs beside an h2load run, at low concurrency and a bounded rate, for a bounded time, and
returns the count of each status code name ("OK", "UNAVAILABLE", ...).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from bench.stack import chat_request
from client import AIServiceError, AsyncAIClient


async def sample_statuses(
    target: str,
    api_key: str | None,
    *,
    seconds: float,
    concurrency: int = 2,
    per_second: float = 40.0,
    max_calls: int = 2_000,
) -> dict[str, int]:
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    interval = concurrency / per_second
    request = chat_request()
    async with AsyncAIClient(target, api_key, timeout=10) as client:

        async def worker() -> None:
            while time.monotonic() < deadline and sum(counts.values()) < max_calls:
                started = time.monotonic()
                try:
                    await client.chat(request)
                    counts["OK"] += 1
                except AIServiceError as error:
                    counts[error.code.name] += 1
                except Exception as error:  # a transport failure is a finding too
                    counts[type(error).__name__] += 1
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return dict(counts)

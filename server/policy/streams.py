"""How many streams each key holds open at once, against its `max_concurrent_streams`."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from server.errors import TooManyStreams
from server.interceptors.auth import Caller


class OpenStreams:
    """Counts per key in this process; survives config reloads (it holds no config)."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, caller: Caller) -> Iterator[None]:
        cap = caller.max_concurrent_streams
        if cap is not None and self._open[caller.name] >= cap:
            raise TooManyStreams(
                f"key {caller.name!r} already holds {cap} open streams, its limit",
                subject=f"key:{caller.name}",
                limit=cap,
            )
        self._open[caller.name] += 1
        try:
            yield
        finally:
            self._open[caller.name] -= 1
            if not self._open[caller.name]:
                del self._open[caller.name]

    def held_by(self, name: str) -> int:
        return self._open[name]

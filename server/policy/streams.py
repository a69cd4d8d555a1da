"""How many streams each key holds open at once, against its `max_concurrent_streams`."""

from __future__ import annotations

from collections import Counter

from ai_service.errors import TooManyStreams
from ai_service.identity.callers import Caller


class OpenStreams:
    """Counts per key in this process; survives config reloads (it holds no config)."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def hold(self, caller: Caller) -> _Held:
        """`with open_streams.hold(caller):` one more stream of `caller`'s for the block."""
        cap = caller.max_concurrent_streams
        if cap is not None and self._open[caller.name] >= cap:
            raise TooManyStreams(
                f"key {caller.name!r} already holds {cap} open streams, its limit",
                subject=f"key:{caller.name}",
                limit=cap,
            )
        self._open[caller.name] += 1
        return _Held(self._open, caller.name)

    def held_by(self, name: str) -> int:
        return self._open[name]


class _Held:
    """One open stream, counted until the block ends (a class: one per stream)."""

    __slots__ = ("_name", "_open")

    def __init__(self, counts: Counter[str], name: str) -> None:
        self._open = counts
        self._name = name

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        self._open[self._name] -= 1
        if not self._open[self._name]:
            del self._open[self._name]

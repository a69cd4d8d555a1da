"""Token buckets shared by every worker process of one host (`--workers N`, memory backend).

The supervisor names a file (in /dev/shm where there is one); each worker maps it and
keeps its buckets there, so a key's limit holds across the workers as in one process,
exactly. A bucket is a fixed slot of a hash table (open addressing); a lock on the
file (flock: the kernel drops it if a worker dies holding it) makes each take or charge
atomic across the workers. It is held for a few microseconds, never across an await.
The clock is CLOCK_MONOTONIC, one clock for every process of the host.

A slot whose bucket has refilled to its burst holds nothing a fresh bucket would not,
so it is reused for another subject when the table is crowded: no bucket is ever
forgotten before it is full.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import time

from ai_service.limits.buckets import ALLOWED, Decision
from ai_service.limits.rules import RateRule

#: Set by the supervisor for its workers: the file their buckets share.
HOST_BUCKETS_VARIABLE = "AI_SERVICE_HOST_BUCKETS"

#: Buckets the file holds (two per key: requests and tokens); 2 MiB.
SLOTS = 1 << 16
#: Slots looked at from a subject's home slot before the least harmful one is reused.
PROBES = 64

# key (a hash of the subject; 0: never used), tokens, last update, when full again
_SLOT = struct.Struct("<Qddd")


def _slot_key(subject: str) -> int:
    key = int.from_bytes(hashlib.blake2b(subject.encode(), digest_size=8).digest(), "little")
    return key or 1


class HostRateLimiter:
    """Token buckets in a file every worker of the host maps: one limit across them."""

    def __init__(self, path: str, slots: int = SLOTS) -> None:
        self._slots = slots
        size = slots * _SLOT.size
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                if os.fstat(self._fd).st_size < size:  # the first worker sizes it (zeros)
                    os.ftruncate(self._fd, size)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise
        #: subject → its slot key (hashing once per subject, not per call).
        self._keys: dict[str, int] = {}

    def _key(self, subject: str) -> int:
        key = self._keys.get(subject)
        if key is None:
            if len(self._keys) > self._slots:  # subjects come and go: forget old ones
                self._keys.clear()
            key = self._keys[subject] = _slot_key(subject)
        return key

    def _find(self, key: int, now: float) -> int:
        """The offset of `key`'s slot, or of the slot it may take: one whose bucket is
        full again, else a never used one, else (crowded) the one closest to full."""
        home = key % self._slots
        full = -1
        closest, closest_full_at = home * _SLOT.size, math.inf
        for probe in range(PROBES):
            offset = (home + probe) % self._slots * _SLOT.size
            stored, _, _, full_at = _SLOT.unpack_from(self._map, offset)
            if stored == key:
                return offset
            if stored == 0:  # never used: no key lies beyond it
                return offset if full < 0 else full
            if full < 0 and full_at <= now:
                full = offset
            if full_at < closest_full_at:
                closest, closest_full_at = offset, full_at
        return closest if full < 0 else full

    def _apply(self, subject: str, amount: float, rule: RateRule, take: bool) -> Decision:
        key = self._key(subject)
        burst, rate = float(rule.burst), rule.per_second
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            now = time.monotonic()
            offset = self._find(key, now)
            stored, tokens, updated, _ = _SLOT.unpack_from(self._map, offset)
            if stored != key:  # a fresh bucket is full
                tokens, updated = burst, now
            tokens = min(burst, tokens + max(0.0, now - updated) * rate)
            decision = ALLOWED
            if not take:
                tokens = min(burst, tokens - amount)
            elif tokens >= amount:
                tokens -= amount
            else:
                decision = Decision(False, (amount - tokens) / rate)
            full_at = now + (burst - tokens) / rate if rate > 0 else math.inf
            _SLOT.pack_into(self._map, offset, key, tokens, now, full_at)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return decision

    async def take(self, subject: str, amount: float, rule: RateRule) -> Decision:
        return self._apply(subject, amount, rule, take=True)

    async def charge(self, subject: str, amount: float, rule: RateRule) -> None:
        self._apply(subject, amount, rule, take=False)

    async def aclose(self) -> None:
        self._map.close()
        os.close(self._fd)

"""The last day of traffic in memory, a minute at a time, for the status page's charts.

A ring of MINUTES buckets: the bucket of a minute is reused a day later, when it is reset, so
memory is fixed and nothing needs sweeping. Each bucket knows which minute it holds; one that
holds an older minute reads as empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields

MINUTES = 1440


@dataclass
class Bucket:
    """What happened in one span of time (a minute in the ring, several in a chart's bin)."""

    minute: int = -1  # minutes since the epoch of the (first) minute it holds
    requests: int = 0
    file_hits: int = 0
    file_misses: int = 0
    bytes_from_cache: int = 0
    bytes_from_upstream: int = 0
    upstream_requests: int = 0
    upstream_errors: int = 0
    upstream_seconds: float = 0.0  # summed over upstream_requests that were answered

    @property
    def hit_ratio(self) -> float | None:
        files = self.file_hits + self.file_misses
        return self.file_hits / files if files else None

    @property
    def upstream_latency(self) -> float | None:
        """Mean time to the upstream's response headers, in seconds."""
        answered = self.upstream_requests - self.upstream_errors
        return self.upstream_seconds / answered if answered > 0 else None

    def add(self, other: Bucket) -> None:
        for f in fields(self):
            if f.name != "minute":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class History:
    def __init__(self, clock: Callable[[], float] = time.time, minutes: int = MINUTES) -> None:
        self.clock = clock
        self._ring = [Bucket() for _ in range(minutes)]

    def _now(self) -> Bucket:
        minute = int(self.clock() // 60)
        slot = minute % len(self._ring)
        if self._ring[slot].minute != minute:
            self._ring[slot] = Bucket(minute)  # a day old (or never used): start it afresh
        return self._ring[slot]

    def request(self) -> None:
        self._now().requests += 1

    def file(self, hit: bool, sent: int) -> None:
        """A file answered: from the cache (hit) or the upstream, sent bytes long."""
        bucket = self._now()
        if hit:
            bucket.file_hits += 1
            bucket.bytes_from_cache += sent
        else:
            bucket.file_misses += 1
            bucket.bytes_from_upstream += sent

    def upstream(self, seconds: float | None) -> None:
        """A request to the upstream: answered after seconds, or None when it failed."""
        bucket = self._now()
        bucket.upstream_requests += 1
        if seconds is None:
            bucket.upstream_errors += 1
        else:
            bucket.upstream_seconds += seconds

    def series(self, minutes: int, per_bin: int = 1) -> list[Bucket]:
        """The last `minutes` minutes, oldest first, summed into bins of per_bin minutes (the
        last bin ends with the current minute); minutes with nothing recorded count as empty."""
        minutes = min(minutes, len(self._ring))
        now = int(self.clock() // 60)
        first = now - minutes + 1
        bins = [Bucket(minute=first + i) for i in range(0, minutes, per_bin)]
        for minute in range(first, now + 1):
            bucket = self._ring[minute % len(self._ring)]
            if bucket.minute == minute:
                bins[(minute - first) // per_bin].add(bucket)
        return bins

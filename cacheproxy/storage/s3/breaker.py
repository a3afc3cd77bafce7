"""A circuit breaker and the counters of the shared tier.

A shared tier that is down must cost a request nothing: after a few consecutive failures the
breaker opens and every call skips the network until a cool-down has passed; then one probe
decides whether it closes again. That is one retry per cool-down for the whole node, instead
of a timeout per client request.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass
class SharedCounters:
    """Plain numbers for the metrics module to export; nothing here knows about Prometheus."""

    hits: int = 0
    misses: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    uploads: int = 0  # objects written (files and pages)
    requests: int = 0  # requests sent to the object store
    skipped: int = 0  # calls answered without the network because the breaker was open
    corrupt: int = 0  # shared file objects whose bytes did not match their sha256
    dropped_uploads: int = 0  # uploads not queued (backlog full) or skipped (tier degraded)
    # timeout, connection, server (5xx), denied (401/403), throttled (429), corrupt, other
    errors: collections.Counter[str] = field(default_factory=collections.Counter)


class CircuitBreaker:
    def __init__(
        self,
        threshold: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = CLOSED
        self.reason = ""

    def allow(self) -> bool:
        """Whether a call may use the network now; in half-open, only the one probe may."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self._clock() - self._opened_at >= self.cooldown:
            self.state = HALF_OPEN
            self._probing = False
        if self.state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        self.state = CLOSED
        self.reason = ""

    def failure(self, reason: str) -> None:
        self._failures += 1
        self._probing = False
        if self.state == HALF_OPEN or self._failures >= self.threshold:
            self.trip(reason)

    def abandon(self) -> None:
        """The call allowed through was cancelled: neither a success nor a failure."""
        self._probing = False

    def trip(self, reason: str) -> None:
        """Open now, whatever the count: the store is known to be unusable."""
        self.state = OPEN
        self._opened_at = self._clock()
        self.reason = reason

    @property
    def retry_in(self) -> float:
        """Seconds until the next probe may go out (0 when closed or due)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.cooldown - (self._clock() - self._opened_at))

"""A floor under the speed of an upstream file transfer.

--read-timeout bounds only the gap between two bytes, so an upstream that sends one byte a
second would hold a download (and every client waiting on it) for as long as the file is
long. Files vary from kilobytes to gigabytes, so an overall deadline would be either too short
for large files or useless for small ones; instead the average rate over a sliding window must
stay above a floor. The first window is grace (connection set-up, a slow start), and the
window is long enough that a slow but steady link passes.

Time is counted only while waiting for the upstream: a reader that is slow itself (a relay to
a slow client, a busy disk) pauses the clock rather than being blamed on the upstream.
"""

from __future__ import annotations

from collections import deque

from cacheproxy.errors import DownloadFailed

# Samples kept per window: the average is measured over a span at most 1/16 longer than it.
_SAMPLES_PER_WINDOW = 16


class RateFloor:
    """Counts a transfer's bytes as they arrive and fails it when too few came in the last
    window. min_rate 0 turns the check off."""

    def __init__(self, min_rate: int, window: float) -> None:
        self.min_rate = min_rate
        self.window = window
        self._waited = 0.0  # seconds spent waiting for the upstream so far
        self._received = 0
        # (seconds waited, bytes received by then), oldest first; the first is always at or
        # before the start of the window, so the average covers at least a whole window.
        self._samples: deque[tuple[float, int]] = deque([(0.0, 0)])

    def add(self, size: int, waited: float) -> None:
        """Count size bytes that took waited seconds to arrive; raises DownloadFailed when
        the average rate over the last window is below the floor."""
        if self.min_rate <= 0:
            return
        self._waited += waited
        now = self._waited
        self._received += size
        samples = self._samples
        if now - samples[-1][0] >= self.window / _SAMPLES_PER_WINDOW:
            samples.append((now, self._received))
        while len(samples) > 1 and samples[1][0] <= now - self.window:
            samples.popleft()
        since, received_then = samples[0]
        elapsed = now - since
        if elapsed < self.window:
            return  # still within the grace of the first window
        rate = (self._received - received_then) / elapsed
        if rate < self.min_rate:
            raise DownloadFailed(
                f"upstream too slow: {rate:.0f} bytes/s over the last {elapsed:.0f} s,"
                f" below the minimum of {self.min_rate} bytes/s"
            )

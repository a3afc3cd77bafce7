"""The parts of a remote file held so far, merged where they touch: what a range reader has
read, and which bytes it still lacks. Pure: no I/O."""

from __future__ import annotations

from cacheproxy.errors import MissingBytes


class HeldBytes:
    def __init__(self) -> None:
        self._spans: list[tuple[int, bytes]] = []

    def read(self, start: int, end: int) -> bytes:
        """Bytes start to end (exclusive), or MissingBytes naming the part not held, trimmed
        of what is held at either end."""
        if start == end:
            return b""
        for span_start, data in self._spans:
            if span_start <= start and end <= span_start + len(data):
                return data[start - span_start : end - span_start]
        for span_start, data in self._spans:
            span_end = span_start + len(data)
            if span_start <= start < span_end:
                start = span_end
            if span_start < end <= span_end:
                end = span_start
        raise MissingBytes(start, end)

    def hold(self, start: int, data: bytes) -> None:
        """Keep the bytes, merged with any span they touch, so a range is read from one span."""
        end = start + len(data)
        touching = [(s, d) for s, d in self._spans if s <= end and start <= s + len(d)]
        self._spans = [(s, d) for s, d in self._spans if not (s <= end and start <= s + len(d))]
        merged_start = min([start] + [s for s, _ in touching])
        merged_end = max([end] + [s + len(d) for s, d in touching])
        merged = bytearray(merged_end - merged_start)
        for s, d in touching:
            merged[s - merged_start : s - merged_start + len(d)] = d
        merged[start - merged_start : end - merged_start] = data
        self._spans.append((merged_start, bytes(merged)))

    def through(self, end: int) -> tuple[int, bytes] | None:
        """The span that holds the bytes up to `end`, and where it starts."""
        for start, data in self._spans:
            if start < end <= start + len(data):
                return start, data
        return None

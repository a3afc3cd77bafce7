"""A wheel's METADATA read from byte ranges of the remote file, without downloading the wheel.

Sans-I/O: the reader says which range it wants next and the caller fetches it.

    reader = TailMetadataReader(filename, total_size)
    while (want := reader.next_range()) is not None:  # (start, end_exclusive)
        reader.feed(want[0], await fetch(*want))
    metadata = reader.result()

Usually one range, the tail (end records, central directory and METADATA); a big wheel takes
two: its directory and the .dist-info members before it, asked for together. Everything the
file declares is checked against bounds, so a hostile zip costs at most `max_requested_bytes`
and never inflates past `max_metadata`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from cacheproxy.simple.dist_info import NotOwnMetadata, pick_metadata
from cacheproxy.simple.zipinfo import (
    END_SEARCH,
    LOCAL_HEADER,
    Directory,
    Entry,
    UnreadableZip,
    find_directory,
    iter_entries,
    local_data_start,
)

__all__ = ["TailMetadataReader", "UnreadableZip"]

_STORED = 0
_DEFLATED = 8
# Local headers usually carry a few more extra bytes than the directory says (Zip64 sizes,
# timestamps): asking for this much more saves a round trip in the common case.
_LOCAL_SLACK = 1024
# A wheel's .dist-info members come last, right before the directory: METADATA, then RECORD,
# which lists every file as the directory does and so is about its size. When the directory was
# not all in the tail, the request for the rest of it reaches back (directory size + slack) to
# take METADATA along, but only while that stays small: on a big wheel it would be a second
# directory's worth of RECORD bytes (django: 370 KB), which cost more than one more round trip
# on any link slower than about 40 Mbit/s at 50 ms, and are taken from every other transfer on
# a shared link. Past the cap, METADATA is a third request of its own size.
_DIST_INFO_SLACK = 32 * 1024
_DIST_INFO_REACH_MAX = 64 * 1024
# Requests a well-formed wheel can need: tail, wider end search, Zip64 record, directory,
# METADATA, a local extra field longer than the slack. More means the file is playing games.
_MAX_REQUESTS = 8


def default_tail_guess(total_size: int) -> int:
    """How much of the end to ask for first: an eighth of the wheel, 16 to 64 KiB. The end
    records, directory and METADATA of a small wheel are a few KiB, so a fixed 64 KiB would be
    most of it; measured on real wheels, an eighth needs no more requests than 64 KiB."""
    return min(64 * 1024, max(16 * 1024, total_size // 8))


class _NeedBytes(Exception):
    def __init__(self, start: int, end: int) -> None:
        super().__init__(start, end)
        self.start, self.end = start, end


class TailMetadataReader:
    """Reads `{name}-{version}.dist-info/METADATA` out of a remote wheel, range by range."""

    def __init__(
        self,
        filename: str,
        total_size: int,
        *,
        tail_guess: int | None = None,
        max_directory: int = 16 * 1024 * 1024,
        max_metadata: int = 8 * 1024 * 1024,
    ) -> None:
        try:
            self._name, self._version, _, _ = parse_wheel_filename(filename)
        except InvalidWheelFilename as exc:
            raise UnreadableZip(str(exc)) from None
        if total_size < 0:
            raise UnreadableZip(f"negative size {total_size}")
        self._total = total_size
        self._tail_guess = max(tail_guess or default_tail_guess(total_size), 1)
        self._max_directory = max_directory
        self._max_metadata = max_metadata
        # Deflate can grow incompressible data a little; more than this is not METADATA.
        self._max_compressed = max_metadata + max_metadata // 64 + 1024
        self.max_requested_bytes = (
            self._tail_guess
            + END_SEARCH
            + max_directory
            + _DIST_INFO_REACH_MAX
            + self._max_compressed
            + 4 * 0x10000
        )
        self.requested_bytes = 0
        self.requests = 0
        self.member: str | None = None
        self._spans: list[tuple[int, bytes]] = []
        self._pending: tuple[int, int] | None = None
        self._directory: Directory | None = None
        self._entry: Entry | None = None
        self._metadata: bytes | None = None
        self._error: UnreadableZip | None = None

    def next_range(self) -> tuple[int, int] | None:
        """The next (start, end_exclusive) to fetch, or None when the result is ready.
        Raises UnreadableZip when the file cannot be read this way."""
        if self._error is not None:
            raise self._error
        if self._metadata is not None:
            return None
        if self._pending is not None:
            return self._pending
        try:
            self._metadata = self._advance()
            return None
        except _NeedBytes as need:
            return self._ask(need.start, need.end)
        except UnreadableZip as exc:
            self._error = exc
            raise

    def feed(self, start: int, data: bytes) -> None:
        """Bytes starting at `start` that cover the range asked for (more is fine)."""
        if self._pending is None:
            raise RuntimeError("feed() without a range asked for")
        wanted_start, wanted_end = self._pending
        end = start + len(data)
        if start > wanted_start or end < wanted_end:
            self._error = UnreadableZip(
                f"asked for bytes {wanted_start}-{wanted_end}, got {start}-{end}"
            )
            raise self._error
        if end > self._total:
            self._error = UnreadableZip(f"got bytes up to {end} of a {self._total}-byte file")
            raise self._error
        self._pending = None
        self._hold(start, bytes(data))

    def result(self) -> bytes:
        """METADATA, byte for byte, once next_range() has returned None."""
        if self._error is not None:
            raise self._error
        if self._metadata is None:
            raise RuntimeError("result() before next_range() returned None")
        return self._metadata

    def suffix(self) -> tuple[int, bytes] | None:
        """The bytes held that run to the end of the file, and where they start."""
        for start, data in self._spans:
            if start + len(data) == self._total:
                return start, data
        return None

    def _ask(self, start: int, end: int) -> tuple[int, int]:
        self.requests += 1
        if self.requests > _MAX_REQUESTS:
            self._error = UnreadableZip(f"still incomplete after {_MAX_REQUESTS} requests")
            raise self._error
        if self.requested_bytes + (end - start) > self.max_requested_bytes:
            self._error = UnreadableZip(f"would read more than {self.max_requested_bytes} bytes")
            raise self._error
        self.requested_bytes += end - start
        self._pending = (start, end)
        return self._pending

    def _advance(self) -> bytes:
        """The whole parse, from the bytes held; raises _NeedBytes for the first bytes missing.
        Finished stages are kept, so each call resumes where the previous one stopped."""
        if self._directory is None:
            self._directory = find_directory(
                self._read,
                self._total,
                first_look=self._tail_guess,
                max_size=self._max_directory,
            )
        directory = self._directory
        if self._entry is None:
            try:
                self._read(directory.start, directory.end)  # all of it in one request
            except _NeedBytes as need:
                reach = directory.end - directory.start + _DIST_INFO_SLACK
                reach = reach if reach <= _DIST_INFO_REACH_MAX else 0
                raise _NeedBytes(
                    max(0, min(need.start, directory.start - reach)), need.end
                ) from None
            self._entry = self._choose(iter_entries(self._read, directory))
            self.member = self._entry.name
        entry = self._entry
        self._check_entry(entry)
        guess_end = entry.header_offset + LOCAL_HEADER.size + len(entry.raw_name)
        guess_end = min(directory.start, guess_end + entry.compressed_size + _LOCAL_SLACK)
        self._read(entry.header_offset, guess_end)
        data_start = local_data_start(self._read, entry, directory)
        raw = self._read(data_start, data_start + entry.compressed_size)
        return self._decompress(entry, raw)

    def _choose(self, entries: Iterable[Entry]) -> Entry:
        """The wheel's own METADATA, by the rule every reader of the proxy shares."""
        listed = list(entries)
        try:
            chosen = pick_metadata((e.name for e in listed), self._name, self._version)
        except NotOwnMetadata as exc:
            raise UnreadableZip(str(exc)) from None
        return next(e for e in listed if e.name == chosen)

    def _check_entry(self, entry: Entry) -> None:
        if entry.encrypted:
            raise UnreadableZip(f"{entry.name} is encrypted")
        if entry.method not in (_STORED, _DEFLATED):
            raise UnreadableZip(f"{entry.name} uses compression method {entry.method}")
        if entry.size > self._max_metadata:
            raise UnreadableZip(f"{entry.name} declares {entry.size} bytes, over the bound")
        if entry.compressed_size > self._max_compressed:
            raise UnreadableZip(f"{entry.name} is {entry.compressed_size} bytes compressed")
        if entry.method == _STORED and entry.compressed_size != entry.size:
            raise UnreadableZip(f"{entry.name} is stored but its two sizes differ")

    def _decompress(self, entry: Entry, raw: bytes) -> bytes:
        if entry.method == _STORED:
            data = raw
        else:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                # One byte past the declared size is enough to catch a lie (a bomb stops here).
                data = inflater.decompress(raw, entry.size + 1)
            except zlib.error as exc:
                raise UnreadableZip(f"{entry.name}: {exc}") from None
            if len(data) > entry.size:
                raise UnreadableZip(f"{entry.name} inflates past its declared {entry.size} bytes")
            if not inflater.eof:
                raise UnreadableZip(f"{entry.name}: deflate stream ends early")
        if len(data) != entry.size:
            raise UnreadableZip(f"{entry.name} is {len(data)} bytes, not {entry.size}")
        if zlib.crc32(data) != entry.crc:
            raise UnreadableZip(f"{entry.name} fails its CRC-32 check")
        return data

    def _read(self, start: int, end: int) -> bytes:
        if start < 0 or end > self._total or start > end:
            raise UnreadableZip(f"bytes {start}-{end} lie outside a {self._total}-byte file")
        if start == end:
            return b""
        for span_start, data in self._spans:
            if span_start <= start and end <= span_start + len(data):
                return data[start - span_start : end - span_start]
        # Ask only for what is missing at either end of the range.
        for span_start, data in self._spans:
            span_end = span_start + len(data)
            if span_start <= start < span_end:
                start = span_end
            if span_start < end <= span_end:
                end = span_start
        raise _NeedBytes(start, end)

    def _hold(self, start: int, data: bytes) -> None:
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

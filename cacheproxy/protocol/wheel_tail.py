"""A wheel's METADATA read from byte ranges of the remote file, without downloading the wheel.

Sans-I/O: the reader says which range it wants next and the caller fetches it.

    reader = TailMetadataReader(filename, total_size)
    while (want := reader.next_range()) is not None:  # (start, end_exclusive)
        reader.feed(want[0], await fetch(*want))
    metadata = reader.result()

Usually one range, the tail (end records, central directory and METADATA); a big wheel takes
two: its directory and the .dist-info members before it, asked for together. A wheel whose
directory is larger still takes three, and two round trips: the directory's last entries,
held from the tail, tell where METADATA likely lies, and `alongside()` names that range, to
be fetched while the rest of the directory is. Only the whole directory decides what is read,
so a wrong guess costs a request, never a wrong answer. Everything the file declares is
checked against bounds, so a hostile zip costs at most `max_requested_bytes` and never
inflates past `max_metadata`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from cacheproxy.errors import MissingBytes, NotOwnMetadata, UnreadableZip
from cacheproxy.protocol.dist_info import pick_metadata
from cacheproxy.protocol.held_bytes import HeldBytes
from cacheproxy.protocol.zipinfo import (
    END_SEARCH,
    LOCAL_HEADER,
    Directory,
    Entry,
    entries_of_part,
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
# A METADATA range fetched beside the directory on a guess: larger is not worth the bytes.
_ALONGSIDE_MAX = 256 * 1024
# Requests a well-formed wheel can need: tail, wider end search, Zip64 record, directory,
# METADATA beside it, METADATA, a local extra field longer than the slack. More means the file
# is playing games.
_MAX_REQUESTS = 9


def default_tail_guess(total_size: int) -> int:
    """How much of the end to ask for first: an eighth of the wheel, 16 to 64 KiB. The end
    records, directory and METADATA of a small wheel are a few KiB, so a fixed 64 KiB would be
    most of it; measured on real wheels, an eighth needs no more requests than 64 KiB."""
    return min(64 * 1024, max(16 * 1024, total_size // 8))


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
            + _ALONGSIDE_MAX
            + 4 * 0x10000
        )
        self.requested_bytes = 0
        self.requests = 0
        self.member: str | None = None
        self._held = HeldBytes()
        self._pending: tuple[int, int] | None = None
        self._alongside: tuple[int, int] | None = None
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
        except MissingBytes as need:
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
        self._held.hold(start, bytes(data))

    def alongside(self) -> tuple[int, int] | None:
        """A range worth fetching at the same time as the one next_range() asked for, once:
        where METADATA likely lies while the rest of a large directory is read."""
        wanted, self._alongside = self._alongside, None
        return wanted

    def feed_alongside(self, start: int, data: bytes) -> None:
        """The bytes of an alongside() range, as they came; kept like any other."""
        if start < 0 or start + len(data) > self._total:
            self._error = UnreadableZip(
                f"got bytes {start}-{start + len(data)} of a {self._total}-byte file"
            )
            raise self._error
        if data:
            self._held.hold(start, bytes(data))

    def result(self) -> bytes:
        """METADATA, byte for byte, once next_range() has returned None."""
        if self._error is not None:
            raise self._error
        if self._metadata is None:
            raise RuntimeError("result() before next_range() returned None")
        return self._metadata

    def suffix(self) -> tuple[int, bytes] | None:
        """The bytes held that run to the end of the file, and where they start."""
        return self._held.through(self._total)

    def _ask(self, start: int, end: int) -> tuple[int, int]:
        self._pending = self._count(start, end)
        return self._pending

    def _count(self, start: int, end: int) -> tuple[int, int]:
        """A range to be fetched, within the bounds on requests and bytes."""
        self.requests += 1
        if self.requests > _MAX_REQUESTS:
            self._error = UnreadableZip(f"still incomplete after {_MAX_REQUESTS} requests")
            raise self._error
        if self.requested_bytes + (end - start) > self.max_requested_bytes:
            self._error = UnreadableZip(f"would read more than {self.max_requested_bytes} bytes")
            raise self._error
        self.requested_bytes += end - start
        return start, end

    def _advance(self) -> bytes:
        """The whole parse, from the bytes held; raises MissingBytes for the first bytes missing.
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
            except MissingBytes as need:
                reach = directory.end - directory.start + _DIST_INFO_SLACK
                if reach > _DIST_INFO_REACH_MAX:
                    reach = 0
                    self._guess_alongside(directory)
                raise MissingBytes(
                    max(0, min(need.start, directory.start - reach)), need.end
                ) from None
            self._entry = self._choose(iter_entries(self._read, directory))
            self.member = self._entry.name
        entry = self._entry
        self._check_entry(entry)
        self._read(*_member_range(entry, directory))
        data_start = local_data_start(self._read, entry, directory)
        raw = self._read(data_start, data_start + entry.compressed_size)
        return self._decompress(entry, raw)

    def _guess_alongside(self, directory: Directory) -> None:
        """Where METADATA lies by the directory's entries held so far (its last ones, where
        a wheel's .dist-info members are listed): the range to fetch beside the rest."""
        held = self._held.through(directory.end)
        if held is None:
            return
        span_start, data = held
        part_start = max(span_start, directory.start)
        part = data[part_start - span_start : directory.end - span_start]
        entries = entries_of_part(part, part_start, directory)
        try:
            chosen = pick_metadata((e.name for e in entries), self._name, self._version)
        except NotOwnMetadata:
            return
        start, end = _member_range(next(e for e in entries if e.name == chosen), directory)
        if start < end and end - start <= _ALONGSIDE_MAX:
            self._alongside = self._count(start, end)

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
        return self._held.read(start, end)


def _member_range(entry: Entry, directory: Directory) -> tuple[int, int]:
    """An entry's local header and data, as far as the directory tells: local headers usually
    carry a few more extra bytes than the directory's entry, hence the slack."""
    end = entry.header_offset + LOCAL_HEADER.size + len(entry.raw_name)
    return entry.header_offset, min(directory.start, end + entry.compressed_size + _LOCAL_SLACK)

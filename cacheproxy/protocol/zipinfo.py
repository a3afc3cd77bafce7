"""The structures at the end of a zip file: end-of-central-directory records and the central
directory, parsed from whatever bytes a caller can read (a range of a remote file, a local file).

Every function takes `read(start, end) -> bytes`, which returns exactly those bytes or raises
(a remote reader raises to ask for them). Nothing here trusts a number from the file: every
offset and size is checked against the file's size and against bounds before it is used.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from cacheproxy.errors import UnreadableZip

Read = Callable[[int, int], bytes]

_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sIQI")
_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
_ENTRY = struct.Struct("<4sHHHHHHIIIHHHHHII")
_ENTRY_SIGNATURE = b"PK\x01\x02"
LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
_ZIP64_EXTRA = 0x0001
_SATURATED_16 = 0xFFFF
_SATURATED_32 = 0xFFFFFFFF
# The end record is followed by a comment of at most 65535 bytes.
END_SEARCH = _EOCD.size + 0xFFFF
_FLAG_ENCRYPTED = 0x1
_FLAG_UTF8 = 0x800
# Places in a part of a directory tried as the start of an entry before giving up on it.
_PART_TRIES = 16


@dataclass(frozen=True)
class Directory:
    """Where the central directory lies, in absolute file offsets."""

    start: int
    size: int
    entries: int
    # Bytes before the zip proper (a prepended stub): every recorded offset is shifted by it.
    shift: int

    @property
    def end(self) -> int:
        return self.start + self.size


class Entry(NamedTuple):  # a tuple: made for each of thousands of entries
    name: str
    raw_name: bytes
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int  # absolute, shift applied

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & _FLAG_ENCRYPTED)


def find_directory(read: Read, total: int, *, first_look: int, max_size: int) -> Directory:
    """Locate the central directory from the end records. Looks at the last `first_look` bytes
    first and only widens to the longest possible comment when the end record is not there."""
    if total < _EOCD.size:
        raise UnreadableZip(f"{total} bytes is too short for a zip")
    look = min(total, max(first_look, _EOCD.size))
    end_at = _find_end_record(read(total - look, total), total - look, total)
    if end_at is None and look < min(total, END_SEARCH):
        start = total - min(total, END_SEARCH)
        end_at = _find_end_record(read(start, total), start, total)
    if end_at is None:
        raise UnreadableZip("no end-of-central-directory record (not a zip, or cut short)")
    _, disk, cd_disk, _, entries, size, offset, _ = _EOCD.unpack(read(end_at, end_at + _EOCD.size))
    if disk != 0 or cd_disk != 0:
        raise UnreadableZip("zip spans several disks")
    directory_end = end_at
    zip64_at = end_at - _LOCATOR.size - _ZIP64_EOCD.size
    if end_at >= _LOCATOR.size:
        locator = _LOCATOR.unpack(read(end_at - _LOCATOR.size, end_at))
        if locator[0] == _LOCATOR_SIGNATURE:
            if locator[1] != 0 or locator[3] > 1:
                raise UnreadableZip("zip spans several disks")
            if zip64_at < 0:
                raise UnreadableZip("Zip64 locator without room for its record")
            record = _ZIP64_EOCD.unpack(read(zip64_at, zip64_at + _ZIP64_EOCD.size))
            if record[0] != _ZIP64_EOCD_SIGNATURE:
                raise UnreadableZip("Zip64 locator without a Zip64 end record")
            if record[4] != 0 or record[5] != 0:
                raise UnreadableZip("zip spans several disks")
            entries, size, offset = record[7], record[8], record[9]
            directory_end = zip64_at
    if size > max_size:
        raise UnreadableZip(f"central directory of {size} bytes exceeds the {max_size} bound")
    shift = directory_end - size - offset
    if shift < 0 or size > directory_end:
        raise UnreadableZip("central directory does not fit before the end record")
    if entries * _ENTRY.size > size:
        raise UnreadableZip(f"{entries} entries cannot fit in {size} bytes of central directory")
    return Directory(start=offset + shift, size=size, entries=entries, shift=shift)


def _find_end_record(tail: bytes, tail_start: int, total: int) -> int | None:
    """The absolute offset of the last end record whose comment runs exactly to the end of the
    file: a signature inside a comment, or a cut file, does not match."""
    search_end = len(tail)
    while (found := tail.rfind(_EOCD_SIGNATURE, 0, search_end)) >= 0:
        record = tail[found : found + _EOCD.size]
        if len(record) == _EOCD.size:
            comment_length = _EOCD.unpack(record)[7]
            if tail_start + found + _EOCD.size + comment_length == total:
                return tail_start + found
        search_end = found
    return None


def iter_entries(read: Read, directory: Directory) -> Iterator[Entry]:
    """The central directory's entries, each checked to lie before the directory itself. The
    directory is read whole, once: a large wheel's holds thousands of entries, and a resolver
    waits on this walk through them."""
    data = read(directory.start, directory.end)
    unpack, fixed_size, end = _ENTRY.unpack_from, _ENTRY.size, len(data)
    position = 0
    while position < end:
        fixed_end = position + fixed_size
        if fixed_end > end:
            raise UnreadableZip("central directory ends inside an entry")
        fields = unpack(data, position)
        if fields[0] != _ENTRY_SIGNATURE:
            raise UnreadableZip(
                f"bad central directory entry signature at {directory.start + position}"
            )
        flags, method, crc, compressed, size = fields[3], fields[4], fields[7], fields[8], fields[9]
        name_length, extra_length, comment_length = fields[10], fields[11], fields[12]
        disk, offset = fields[13], fields[16]
        extra_start = fixed_end + name_length
        variable_end = extra_start + extra_length + comment_length
        if variable_end > end:
            raise UnreadableZip("central directory entry runs past the directory")
        raw_name = data[fixed_end:extra_start]
        if extra_length:
            extra = data[extra_start : extra_start + extra_length]
            size, compressed, offset, disk = _apply_zip64(extra, size, compressed, offset, disk)
        if disk not in (0, _SATURATED_16):
            raise UnreadableZip("entry on another disk")
        header_offset = offset + directory.shift
        if header_offset + LOCAL_HEADER.size + compressed > directory.start:
            raise UnreadableZip(f"entry at {header_offset} overlaps the central directory")
        if raw_name.isascii():  # both encodings agree on ASCII, and its decoder is C code
            name = raw_name.decode("ascii")
        else:
            name = raw_name.decode("utf-8" if flags & _FLAG_UTF8 else "cp437", errors="replace")
        yield Entry(name, raw_name, flags, method, crc, compressed, size, header_offset)
        position = variable_end


def entries_of_part(part: bytes, part_start: int, directory: Directory) -> list[Entry]:
    """The entries in `part`, the central directory's last bytes (from `part_start` on), found
    from the first place where a chain of whole entries runs exactly to the directory's end;
    [] where none does within a few tries. A guess, since a name can hold an entry's
    signature: good for fetching ahead, never for deciding what a file holds."""
    if part_start < directory.start or part_start + len(part) != directory.end:
        return []

    def read(start: int, end: int) -> bytes:
        return part[start - part_start : end - part_start]

    position = part.find(_ENTRY_SIGNATURE)
    for _ in range(_PART_TRIES):
        if position < 0:
            break
        piece = Directory(part_start + position, len(part) - position, 0, directory.shift)
        try:
            return list(iter_entries(read, piece))
        except UnreadableZip:
            position = part.find(_ENTRY_SIGNATURE, position + 1)
    return []


def _apply_zip64(
    extra: bytes, size: int, compressed: int, offset: int, disk: int
) -> tuple[int, int, int, int]:
    """Replace the saturated 32-bit fields with the Zip64 extra field's values, in the order the
    format lays them out (only the saturated ones are present)."""
    position = 0
    while position + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, position)
        body = extra[position + 4 : position + 4 + length]
        if len(body) != length:
            raise UnreadableZip("extra field runs past its entry")
        if tag == _ZIP64_EXTRA:
            values = [size, compressed, offset]
            cursor = 0
            for index, value in enumerate(values):
                if value == _SATURATED_32:
                    if cursor + 8 > length:
                        raise UnreadableZip("Zip64 extra field too short")
                    values[index] = struct.unpack_from("<Q", body, cursor)[0]
                    cursor += 8
            if disk == _SATURATED_16 and cursor + 4 <= length:
                disk = struct.unpack_from("<I", body, cursor)[0]
            return values[0], values[1], values[2], disk
        position += 4 + length
    return size, compressed, offset, disk


def local_data_start(read: Read, entry: Entry, directory: Directory) -> int:
    """Where an entry's data begins: past its local header, whose name must be the entry's own
    and whose extra field may differ in length from the central directory's. The data must end
    before the central directory begins."""
    header = LOCAL_HEADER.unpack(read(entry.header_offset, entry.header_offset + LOCAL_HEADER.size))
    if header[0] != LOCAL_HEADER_SIGNATURE:
        raise UnreadableZip(f"no local header for {entry.name!r} at {entry.header_offset}")
    name_start = entry.header_offset + LOCAL_HEADER.size
    name_length, extra_length = header[9], header[10]
    if read(name_start, name_start + name_length) != entry.raw_name:
        raise UnreadableZip(f"local header name differs from {entry.name!r}")
    data_start = name_start + name_length + extra_length
    if data_start + entry.compressed_size > directory.start:
        raise UnreadableZip(f"data of {entry.name!r} overlaps the central directory")
    return data_start

"""Zip files in shapes that `zipfile` makes only on request, or not at all, and surgery on their
end records and central directory for the hostile cases."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Mapping

EPOCH = (2024, 1, 1, 0, 0, 0)
_DOS_TIME, _DOS_DATE = 0, (2024 - 1980) << 9 | 1 << 5 | 1
_SAT32 = 0xFFFFFFFF


def zip_bytes(
    members: Mapping[str, bytes],
    *,
    method: int = zipfile.ZIP_DEFLATED,
    force_zip64: bool = False,
    comment: bytes = b"",
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, EPOCH)
            info.compress_type = method
            with archive.open(info, "w", force_zip64=force_zip64) as member:
                member.write(data)
        archive.comment = comment
    return buffer.getvalue()


class _Unseekable(io.RawIOBase):
    """A write-only stream: zipfile cannot go back to fill in sizes, so it writes data
    descriptors after each member instead."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)


def streamed_zip_bytes(members: Mapping[str, bytes]) -> bytes:
    stream = _Unseekable()
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, EPOCH), data)
    return b"".join(stream.chunks)


def zip64_everywhere(members: Mapping[str, bytes]) -> bytes:
    """Every size and offset saturated and carried in Zip64 extra fields, in the local headers
    and the central directory, with a Zip64 end record: what a writer of huge archives makes."""
    out = bytearray()
    directory = bytearray()
    for name, data in members.items():
        raw = name.encode()
        packed = zlib.compress(data, 9, wbits=-15)
        crc = zlib.crc32(data)
        offset = len(out)
        local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(packed))
        out += struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 8, _DOS_TIME, _DOS_DATE, crc, _SAT32, _SAT32,
            len(raw), len(local_extra),
        )  # fmt: skip
        out += raw + local_extra + packed
        central_extra = struct.pack("<HHQQQ", 1, 24, len(data), len(packed), offset)
        directory += struct.pack(
            "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, 8, _DOS_TIME, _DOS_DATE, crc,
            _SAT32, _SAT32, len(raw), len(central_extra), 0, 0, 0, 0, _SAT32,
        )  # fmt: skip
        directory += raw + central_extra
    directory_offset = len(out)
    out += directory
    record_offset = len(out)
    count = len(members)
    out += struct.pack(
        "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory),
        directory_offset,
    )  # fmt: skip
    out += struct.pack("<4sIQI", b"PK\x06\x07", 0, record_offset, 1)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, _SAT32, _SAT32, 0)
    return bytes(out)


def end_record_at(blob: bytes) -> int:
    return blob.rfind(b"PK\x05\x06")


def patch_end_record(blob: bytes, **fields: int) -> bytes:
    """Overwrite fields of the (non-Zip64) end record: entries, size, offset, disk."""
    layout = {"disk": (4, "<H"), "entries": (10, "<H"), "size": (12, "<I"), "offset": (16, "<I")}
    out = bytearray(blob)
    at = end_record_at(blob)
    for name, value in fields.items():
        delta, fmt = layout[name]
        struct.pack_into(fmt, out, at + delta, value)
    return bytes(out)


def central_entry_at(blob: bytes, name: str) -> int:
    """The offset of the central directory entry for `name`."""
    at = end_record_at(blob)
    size, offset = struct.unpack_from("<II", blob, at + 12)
    position = offset
    while position < offset + size:
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", blob, position + 28)
        if blob[position + 46 : position + 46 + name_length] == name.encode():
            return position
        position += 46 + name_length + extra_length + comment_length
    raise KeyError(name)


def patch_central_entry(blob: bytes, name: str, **fields: int) -> bytes:
    """Overwrite fields of one central directory entry: crc, compressed, size, offset, method."""
    layout = {
        "method": (10, "<H"),
        "flags": (8, "<H"),
        "crc": (16, "<I"),
        "compressed": (20, "<I"),
        "size": (24, "<I"),
        "offset": (42, "<I"),
    }
    out = bytearray(blob)
    at = central_entry_at(blob, name)
    for field, value in fields.items():
        delta, fmt = layout[field]
        struct.pack_into(fmt, out, at + delta, value)
    return bytes(out)

"""Is a downloaded archive whole? A check by the archive's own structure, for files the index
gives no hash for: a body cut short by a closed connection must not be stored as the file.

A zip (wheel) must end with its end records and a central directory whose entries lie inside
the file; a compressed tarball must decompress to the end of its stream, trailer and checksum
included. Other kinds are not checked. Blocking: run it in a thread.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import zlib
from collections.abc import Callable
from typing import BinaryIO

from cacheproxy.errors import UnreadableZip
from cacheproxy.protocol.zipinfo import END_SEARCH, find_directory, iter_entries

_CHUNK = 1024 * 1024
# Deflate cannot expand more than about 1032:1, so a gzip stream is read to its end whatever
# its size; bzip2 and xz can expand without limit, so they are read only this far.
_MAX_RATIO = 1100
_MIN_OUTPUT_BOUND = 64 * 1024 * 1024

_ZIP_SUFFIXES = (".whl", ".zip")
_STREAMS: tuple[tuple[tuple[str, ...], str, Callable[[str], io.BufferedIOBase], bool], ...] = (
    ((".tar.gz", ".tgz"), "gzip", gzip.open, False),
    ((".tar.bz2", ".tbz2", ".tbz"), "bzip2", bz2.open, True),
    ((".tar.xz", ".txz"), "xz", lzma.open, True),
)


def check_archive(path: str | os.PathLike[str], filename: str) -> str | None:
    """None when the file looks whole (or is of a kind not checked), else a one-line reason."""
    lowered = filename.lower()
    try:
        size = os.path.getsize(path)
        if lowered.endswith(_ZIP_SUFFIXES):
            return _zip_problem(os.fspath(path), size)
        for suffixes, kind, opener, bounded in _STREAMS:
            if lowered.endswith(suffixes):
                if size == 0:
                    return f"empty {kind} file"
                limit = max(_MIN_OUTPUT_BOUND, size * _MAX_RATIO) if bounded else None
                return _stream_problem(os.fspath(path), kind, opener, limit)
    except OSError as exc:
        return f"cannot read the file: {exc.strerror or exc}"
    return None


def _zip_problem(path: str, size: int) -> str | None:
    with open(path, "rb") as file:
        read = _ChunkedReader(file)
        try:
            directory = find_directory(read, size, first_look=END_SEARCH, max_size=size)
            for _ in iter_entries(read, directory):
                pass
        except UnreadableZip as exc:
            return f"not a whole zip: {exc}"
    return None


def _stream_problem(
    path: str, kind: str, opener: Callable[[str], io.BufferedIOBase], limit: int | None
) -> str | None:
    produced = 0
    try:
        with opener(path) as stream:
            while chunk := stream.read(_CHUNK):
                produced += len(chunk)
                if limit is not None and produced > limit:
                    return f"{kind} stream expands past {limit} bytes; not checked to its end"
    except EOFError:
        return f"{kind} stream ends before its end marker (cut short)"
    except (OSError, lzma.LZMAError, zlib.error) as exc:
        return f"not a whole {kind} stream: {exc}"
    return None


class _ChunkedReader:
    """read(start, end) over a local file, a megabyte at a time: the central directory is read
    entry by entry, and this keeps that to one system call per megabyte."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._start = 0
        self._data = b""

    def __call__(self, start: int, end: int) -> bytes:
        held_end = self._start + len(self._data)
        if not (self._start <= start and end <= held_end):
            self._file.seek(start)
            self._data = self._file.read(max(end - start, _CHUNK))
            self._start = start
        data = self._data[start - self._start : end - self._start]
        if len(data) != end - start:
            raise UnreadableZip(f"file ends before byte {end}")
        return data

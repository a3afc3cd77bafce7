"""One download's state, and the readers that observe it.

A `Download` owns its state: only its driver (downloads.py) changes it, through the methods
below; a `DownloadReader` only observes, reading the staging file behind the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cacheproxy.errors import DownloadFailed
from cacheproxy.protocol.page import FileSource

if TYPE_CHECKING:
    from cacheproxy.files.downloads import KeptTail


class Download:
    """One upstream transfer in progress, observed by any number of readers."""

    def __init__(
        self,
        project: str,
        filename: str,
        source: FileSource,
        staging: Path,
        tail: KeptTail | None = None,
    ) -> None:
        self.project = project
        self.filename = filename
        self.source = source
        # The file's tail already in a staging file of its own (a KeptTail): adopted, so
        # only the bytes before it are fetched.
        self.tail = tail
        self.staging = tail.path if tail is not None else staging
        self.total: int | None = None
        self.last_modified: str | None = None
        self.written = 0
        self.committed = False
        self.from_shared = False  # the bytes came from the shared tier, not the upstream
        self.error: DownloadFailed | None = None
        self._started = asyncio.Event()
        self._changed = asyncio.Event()
        # Created before anyone can read, so every reader's dup() has something to copy.
        flags = os.O_RDWR if tail is not None else os.O_RDWR | os.O_CREAT | os.O_EXCL
        self._fd = os.open(self.staging, flags, 0o644)
        self.task: asyncio.Task[None] | None = None
        # Byte ranges fetched from the upstream ahead of this download, by (first, last):
        # every client of a cold wheel asks for the same tail, and one fetch answers them all.
        self._ranges: dict[tuple[int, int], asyncio.Future[bytes | None]] = {}

    # -- what observers may ask ----------------------------------------------------------

    async def wait_started(self) -> None:
        """Until the upstream's headers are in (or the download failed before them)."""
        await self._started.wait()

    @property
    def failed_empty(self) -> bool:
        """Failed before a byte was written: nothing of it can be served."""
        return self.error is not None and self.written == 0

    def reader(self) -> DownloadReader:
        """A reader of the staging file; its descriptor outlives the rename on commit."""
        return DownloadReader(self, os.dup(self._fd))

    def shared_range(
        self, first: int, last: int, fetch: Callable[[], Awaitable[bytes | None]]
    ) -> tuple[Awaitable[bytes | None], bool]:
        """The bytes first..last from one upstream range fetch shared by all who ask while
        this download runs, and whether this caller joined a fetch already made."""
        future = self._ranges.get((first, last))
        joined = future is not None
        if future is None:
            # A task of its own, so a client that goes away does not cancel the others' fetch.
            future = asyncio.ensure_future(fetch())
            self._ranges[(first, last)] = future
        return asyncio.shield(future), joined

    async def finished(self) -> None:
        """Until the download committed or failed."""
        assert self.task is not None
        await asyncio.shield(self.task)

    def releasable(self) -> int:
        """How many bytes readers may have: all once committed, else all but the newest,
        which is always the file's last byte by the time the download ends, so a corrupt or
        cut-off transfer can never look complete to a client."""
        return self.written if self.committed else max(0, self.written - 1)

    async def wait_changed(self) -> None:
        await self._changed.wait()

    # -- transitions, made by the driver only --------------------------------------------

    @property
    def fd(self) -> int:
        """The staging file's descriptor, which the driver writes through."""
        return self._fd

    def begin(self, total: int | None, last_modified: str | None) -> None:
        self.total, self.last_modified = total, last_modified
        self._started.set()

    def advance(self, size: int) -> None:
        self.written += size
        self._notify()

    def commit(self) -> None:
        self.total = self.written
        self.committed = True
        self._notify()

    def fail(self, error: DownloadFailed) -> None:
        self.error = error
        self._started.set()
        self._notify()

    def close(self) -> None:
        os.close(self._fd)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


# What one client's read of a running download holds until its transport takes it. A cold
# install streams hundreds of files at once, each client a reader: 256 KiB each was the largest
# holder of a cold proxy's memory (37 MiB with 8 uv clients); 64 KiB costs a few more thread
# hops per file.
READ_CHUNK = 64 * 1024


class DownloadReader:
    """One client's view of a download: the bytes it may have, as they land on disk."""

    def __init__(self, download: Download, fd: int) -> None:
        self.download = download
        self._fd: int | None = fd

    @property
    def fd(self) -> int | None:
        """The reader's own descriptor of the staging file (for sendfile), None once closed."""
        return self._fd

    async def spans(self, start: int, end: int | None) -> AsyncIterator[tuple[int, int]]:
        """(offset, count) of the bytes start..end (exclusive; None for all) as each part
        lands, for whoever sends them from fd; raises DownloadFailed if the download fails
        before they are all there."""
        download, position = self.download, start
        while end is None or position < end:
            limit = download.releasable() if end is None else min(download.releasable(), end)
            if position < limit and self._fd is not None:
                yield position, limit - position
                position = limit
                continue
            if download.error is not None:
                raise download.error
            if download.committed and (end is None or position >= download.written):
                break
            await download.wait_changed()

    async def chunks(self, start: int, end: int | None) -> AsyncIterator[bytes]:
        """The bytes of spans(), read READ_CHUNK at a time: for transports without sendfile
        (TLS)."""
        async for offset, count in self.spans(start, end):
            position, stop = offset, offset + count
            while position < stop and self._fd is not None:
                size = min(stop - position, READ_CHUNK)
                data = await asyncio.to_thread(os.pread, self._fd, size, position)
                if not data:
                    return
                position += len(data)
                yield data
                # Let go of it before waiting for more: hundreds of clients wait on slow
                # downloads at once, and each held its last read until the next (15 MiB
                # with 8 cold uv clients).
                del data

    async def aclose(self) -> None:
        if self._fd is not None:
            close_quietly(self._fd)
            self._fd = None


def write_at(fd: int, data: bytes, offset: int) -> None:
    """All of `data` at `offset`, however many writes that takes."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)

"""PEP 658 metadata of a wheel not cached yet, read from byte ranges of the upstream's copy.

A resolver asks for `<wheel>.metadata` of many wheels it will never install; reading each
wheel's tail (end records and central directory, then the METADATA member) costs a few tens of
kilobytes instead of the whole file. The member is picked by the same rule as a full
extraction (`simple/dist_info.py`) and checked against its CRC-32 and sizes, stored for good
(files are immutable) and shared by concurrent requests. None means "read the whole wheel":
an upstream that will not give ranges, or a zip that cannot be read this way.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from cacheproxy.documents.singleflight import SingleFlight
from cacheproxy.errors import UnreadableZip, UpstreamError
from cacheproxy.protocol.page import METADATA_SUFFIX, FileSource
from cacheproxy.protocol.wheel_tail import TailMetadataReader
from cacheproxy.storage.port import FilesWithFacts
from cacheproxy.upstream import Upstream

log = logging.getLogger(__name__)

# An upstream that ignores Range answers 200 with the whole file: a small wheel is read whole
# here (it is no more than a few ranges would have been), a larger one is left to the full
# download, which stores it as well.
WHOLE_BODY_LIMIT = 2 * 1024 * 1024
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _RangesRefused(UpstreamError):
    pass


class TailMetadata:
    def __init__(
        self,
        store: FilesWithFacts,
        upstream: Upstream,
        length: Callable[[FileSource], Awaitable[int | None]],
        keep_tail: Callable[[str, str, int, bytes], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.store = store
        self.upstream = upstream
        # The file's length (the page's size, else an upstream HEAD): where its tail begins.
        self._length = length
        # Where the tail bytes go once read, so the wheel's download need not fetch them.
        self._keep_tail = keep_tail
        self._flights: SingleFlight[bytes | None] = SingleFlight()
        # Metadata read but not yet in the store: a resolver is waiting for it, and a store
        # write (fsync, index update) should not stand between it and the answer.
        self._unstored: dict[tuple[str, str], bytes] = {}
        self._writes: set[asyncio.Task[None]] = set()
        # Upstream bytes spent on tail reads, for the status page and benchmarks.
        self.bytes_read = 0

    async def read(self, project: str, wheel: str, source: FileSource) -> bytes | None:
        """The wheel's METADATA, read from ranges (and stored right after); one read per wheel
        however many ask at once. None: read the whole wheel instead."""
        unstored = self._unstored.get((project, wheel))
        if unstored is not None:
            return unstored
        return await self._flights.run(
            (project, wheel), lambda: self._read_and_store(project, wheel, source)
        )

    async def _read_and_store(self, project: str, wheel: str, source: FileSource) -> bytes | None:
        # A caller looks in the store before it asks, then awaits other things: a read of
        # the same wheel may have ended and been stored meanwhile. Looked up again in here,
        # so that read is never made twice.
        stored = await self.store.find_file(project, wheel + METADATA_SUFFIX)
        if stored is not None:
            try:
                return await asyncio.to_thread(Path(stored.path).read_bytes)
            except OSError:  # evicted since: read it again
                pass
        data = await self._read(project, wheel, source)
        if data is not None:
            self._unstored[(project, wheel)] = data
            self._write_behind(self._store(project, wheel, data))
        return data

    def _write_behind(self, write: Coroutine[Any, Any, None]) -> None:
        """A write the answer does not wait for; flush() waits for it."""
        task = asyncio.create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _store(self, project: str, wheel: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        try:
            await self.store.put_extracted_metadata(project, wheel, data, digest)
            log.info("metadata of %s read from its tail (sha256 %s)", wheel, digest)
        except Exception as exc:  # served all the same; read again next time
            log.warning("metadata of %s not stored: %s", wheel, exc)
        finally:
            self._unstored.pop((project, wheel), None)

    async def flush(self) -> None:
        """Until the metadata read so far is stored (tests, shutdown)."""
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def _read(self, project: str, wheel: str, source: FileSource) -> bytes | None:
        total = await self._length(source)
        if total is None:
            log.info("metadata of %s: the upstream states no length, reading it whole", wheel)
            return None
        try:
            reader = TailMetadataReader(wheel, total)
            fed = 0
            while (want := await _step(reader, fed)) is not None:
                start, data = await self._fetch_for(reader, source.url, want)
                reader.feed(start, data)
                fed = len(data)
            metadata = reader.result()
            suffix = reader.suffix()
            if suffix is not None and self._keep_tail is not None:
                # For the wheel's download, which comes later if at all: not waited for.
                self._write_behind(self._keep_tail(project, wheel, *suffix))
            return metadata
        except UnreadableZip as exc:
            log.warning(
                "metadata of %s cannot be read from ranges (%s): reading it whole", wheel, exc
            )
        except _RangesRefused as exc:
            log.info("metadata of %s: %s, reading it whole", wheel, exc)
        except UpstreamError as exc:
            log.warning("metadata of %s: range read failed (%s), reading it whole", wheel, exc)
        return None

    async def _fetch_for(
        self, reader: TailMetadataReader, url: str, want: tuple[int, int]
    ) -> tuple[int, bytes]:
        """The range wanted, and at the same time the one the reader would like alongside it:
        fed to the reader if it came, let go if not (the reader then asks for it again)."""
        alongside = reader.alongside()
        if alongside is None:
            return await self._fetch(url, *want)
        wanted, extra = await asyncio.gather(
            self._fetch(url, *want), self._fetch(url, *alongside), return_exceptions=True
        )
        if isinstance(wanted, BaseException):
            raise wanted
        if not isinstance(extra, BaseException):
            reader.feed_alongside(*extra)
        return wanted

    async def _fetch(self, url: str, start: int, end: int) -> tuple[int, bytes]:
        """Bytes from `start` covering [start, end), and where they really start."""
        async with self.upstream.open_file(url, {"Range": f"bytes={start}-{end - 1}"}) as body:
            if body.status == 206:
                match = _CONTENT_RANGE.match(body.headers.get("Content-Range", ""))
                first = int(match[1]) if match else start
                data = await body.read(end - first)
                self.bytes_read += len(data)
                return first, data
            if body.status == 200:
                length = body.content_length
                if length is None or length > WHOLE_BODY_LIMIT:
                    raise _RangesRefused("the upstream ignores Range on a large file")
                data = await body.read(WHOLE_BODY_LIMIT)
                self.bytes_read += len(data)
                return 0, data
            raise _RangesRefused(f"the upstream answered {body.status} to a Range")


# Bytes read by the last range up to which the next step runs on the event loop: the end
# records and a small central directory parse in well under a millisecond, less than a turn
# through the thread pool costs (several milliseconds while large pages are parsed).
INLINE_STEP_BYTES = 64 * 1024


async def _step(reader: TailMetadataReader, fed: int) -> tuple[int, int] | None:
    """The reader's next range; its step parses what the last range brought (the central
    directory of a large wheel holds thousands of entries): in a thread when that is large."""
    if fed <= INLINE_STEP_BYTES:
        return reader.next_range()
    return await asyncio.to_thread(reader.next_range)

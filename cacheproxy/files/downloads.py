"""Cold files: one upstream download per file, shared by every client that asks meanwhile.

The download writes to a staging file and hashes as bytes arrive; clients read the staging
file behind it, so each streams at once and memory stays flat however many are waiting. Only
a file whose length and hash check out is committed to the store.

A `Download` owns its state: only its driver (`Downloads._run`) changes it, through the
Download's own methods, from connecting to receiving to committed or failed; a
`DownloadReader` only observes, reading the staging file behind the writer.

With a shared tier (a fleet's object store), the tier is the download's first source and the
place every verified file is offered to the rest of the fleet. A shared object is copied whole
into the staging file and checked against its sha256 before any client sees a byte of it
(verify before serve). On a LAN object store that costs a fraction of a second even for a large
wheel, and it buys a fallback nobody notices: a corrupt object, or a store that stops mid-body,
leaves an empty staging file and the same download goes on from the upstream, so clients get
their file and never a cut.

A resolver's read of a wheel's metadata (tail_metadata.py) keeps the wheel's last tens of
kilobytes: the tail is written where it belongs in a sparse staging file, and the download that
starts later adopts that file and asks the upstream only for the bytes before it: on a cold
install of a set that is about 3 % fewer upstream bytes. The download still hashes every byte,
so a tail that no longer matches the upstream's file fails the check like any corrupt transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

from cacheproxy.errors import DiskFull, DownloadFailed, SharedTierError, UpstreamError
from cacheproxy.files.extracted import extract_and_store
from cacheproxy.protocol.archives import check_archive
from cacheproxy.protocol.page import FileSource
from cacheproxy.storage.disk import NO_SPACE, DiskSpace
from cacheproxy.storage.port import FilesWithFacts
from cacheproxy.storage.records import StoredFile
from cacheproxy.storage.s3.tier import SharedTier
from cacheproxy.upstream import Upstream

log = logging.getLogger(__name__)

_RECENT_SECONDS = 10
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
# Each is one small staging file: enough for the wheels of a large resolution, few enough
# that wheels resolved but never installed do not pile up.
KEPT_TAILS = 512


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


class Downloads:
    """The downloads running in this process, by (project, filename), and their driver."""

    def __init__(
        self,
        store: FilesWithFacts,
        upstream: Upstream,
        disk: DiskSpace,
        shared: SharedTier | None = None,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.disk = disk
        self.shared = shared
        self._running: dict[tuple[str, str], Download] = {}
        # Files committed moments ago: a request that missed the store just before the commit
        # finds them here instead of starting a second download.
        self._recent: dict[tuple[str, str], StoredFile] = {}
        self.kept_tails = KeptTails(store.new_staging_path)

    def __len__(self) -> int:
        return len(self._running)

    def is_running(self, project: str, filename: str) -> bool:
        return (project, filename) in self._running

    def just_stored(self, project: str, filename: str) -> StoredFile | None:
        stored = self._recent.get((project, filename))
        # A stat, not a read: cheap enough here, and it catches a file evicted since.
        return stored if stored is not None and os.path.exists(stored.path) else None

    def _remember(self, key: tuple[str, str], stored: StoredFile) -> None:
        self._recent[key] = stored
        asyncio.get_running_loop().call_later(_RECENT_SECONDS, self._recent.pop, key, None)

    async def keep_tail(self, project: str, filename: str, start: int, data: bytes) -> None:
        """Keep the bytes of a file from `start` to its end for its download, unless that
        already runs or has ended."""
        key = (project, filename)
        if key not in self._running and key not in self._recent:
            await self.kept_tails.keep(key, start, data)

    def join(self, project: str, filename: str, source: FileSource) -> DownloadReader:
        """A reader of the running download of a file, started if none runs."""
        key = (project, filename)
        download = self._running.get(key)
        if download is None:
            download = self._new_download(project, filename, source)
            self._running[key] = download
            download.task = asyncio.create_task(self._run(download))
        return download.reader()

    def _new_download(self, project: str, filename: str, source: FileSource) -> Download:
        tail = self.kept_tails.take((project, filename))
        if tail is not None and tail.total == (source.size or tail.total):
            try:
                return Download(project, filename, source, tail.path, tail)
            except OSError:  # gone since: fetched whole
                pass
        if tail is not None:
            discard_quietly(tail.path)
        return Download(project, filename, source, self.store.new_staging_path())

    async def close(self) -> None:
        tasks = [d.task for d in self._running.values() if d.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.kept_tails.close()

    async def _run(self, download: Download) -> None:
        key = (download.project, download.filename)
        try:
            sha256 = await self._from_shared(download) or await self._transfer(download)
            await self._keep(download, sha256)
            download.commit()
        except asyncio.CancelledError:
            download.fail(DownloadFailed("proxy is shutting down"))
            raise
        except DiskFull as exc:
            log.warning("disk full: %s is served without being cached (%s)", download.filename, exc)
            download.fail(exc)
        except UpstreamError as exc:
            log.warning("download of %s failed: %s", download.filename, exc)
            failed = exc if isinstance(exc, DownloadFailed) else DownloadFailed(str(exc))
            download.fail(failed)
        except OSError as exc:
            if exc.errno in NO_SPACE:
                self.disk.note_full()
            log.error("cannot store %s: %s", download.filename, exc)
            download.fail(DownloadFailed(f"cannot store the file: {exc.strerror or exc}"))
        except Exception as exc:
            # Whatever went wrong, the readers waiting on this download must hear of it: a
            # download that never reports would hold them (and their descriptors) for good.
            log.exception("download of %s failed unexpectedly", download.filename)
            download.fail(DownloadFailed(f"download failed ({type(exc).__name__})"))
        finally:
            self._running.pop(key, None)
            download.close()
            if not download.committed:
                await self.store.discard(download.staging)

    async def _keep(self, download: Download, sha256: str) -> None:
        """Commit a verified file to the store, with what was learned about it."""
        project, filename = download.project, download.filename
        stored = await self.store.commit_file(project, filename, download.staging, sha256)
        self.kept_tails.drop((project, filename))  # one kept while this download ran
        if stored is None:
            log.info("%s was served but not kept: it exceeds the cache size", filename)
            return
        await self.store.learn(project, filename, **_facts(download, stored.size))
        if self.shared is not None and not download.from_shared:
            # Queued for upload: never delays the clients.
            self.shared.enqueue_file(sha256, Path(stored.path), stored.size)
        if download.source.extract_metadata:
            # Before the clients get the last byte, so their next page shows the metadata.
            await extract_and_store(self.store, project, filename, stored.path)
        self._remember((project, filename), stored)

    async def _from_shared(self, download: Download) -> str | None:
        """The file from the shared tier, whole and verified before readers see a byte; None
        (and the staging file emptied) to go to the upstream instead: the tier lacks it, fails
        or holds corrupt bytes, or the disk has no room for it (the upstream path then decides
        what to do about that)."""
        sha256 = expected_sha256(download.source)
        if self.shared is None or sha256 is None:
            return None
        async with self.shared.open_file(sha256) as body:
            if body is None or not await self.disk.has_room(body.size):
                return None
            written = 0
            try:
                async for chunk in body.verified_chunks():
                    await asyncio.to_thread(write_at, download.fd, chunk, written)
                    written += len(chunk)
            except SharedTierError as exc:
                # The tier counted it (and deleted a corrupt object); the upstream takes over.
                log.warning(
                    "shared copy of %s unusable, fetching upstream: %s", download.filename, exc
                )
                await asyncio.to_thread(os.ftruncate, download.fd, 0)
                return None
        download.from_shared = True
        download.begin(written, None)
        download.advance(written)
        return sha256

    async def _transfer(self, download: Download) -> str:
        """Copy the upstream body to the staging file; the verified sha256 of its bytes."""
        source = download.source
        if download.tail is not None and os.fstat(download.fd).st_size < download.tail.total:
            download.tail = None  # cut off since (a failed copy from the shared tier)
        tail = download.tail
        digests = _Digests(source.hash_name)
        if tail is not None and tail.start == 0:  # the tail read took the whole file
            download.begin(tail.total, None)
        else:
            await self._receive(download, digests)
        tail = download.tail  # None now if the whole file came after all (see _receive)
        if tail is not None:
            await asyncio.to_thread(digests.add_from, download.fd, tail.start, tail.total)
            download.advance(tail.total - tail.start)
        if source.hash_value is not None and digests.checked() != source.hash_value:
            raise DownloadFailed(
                f"{download.filename} does not match its {source.hash_name or 'sha256'} hash"
            )
        if source.hash_value is None:
            # Nothing to check the bytes against: the archive's own structure must be whole,
            # so a body cut off by a closing connection is not stored as if complete.
            reason = await asyncio.to_thread(check_archive, download.staging, download.filename)
            if reason is not None:
                raise DownloadFailed(f"{download.filename} is not whole: {reason}")
        return digests.sha256.hexdigest()

    async def _receive(self, download: Download, digests: _Digests) -> None:
        """The upstream's body into the staging file: the whole file, or with a kept tail
        only the bytes before it."""
        source, tail = download.source, download.tail
        headers = {"Range": f"bytes=0-{tail.start - 1}"} if tail is not None else None
        total: int | None
        expected: int | None
        async with self.upstream.open_file(source.url, headers) as body:
            if tail is not None and body.status == 206:
                total, expected = _ranged_total(body.headers, tail), tail.start
            elif body.status == 200:
                if tail is not None:  # the whole file after all: the kept tail is written over
                    download.tail = None
                    await asyncio.to_thread(os.ftruncate, download.fd, 0)
                total = body.content_length if body.content_length is not None else source.size
                expected = total
            else:
                raise DownloadFailed(
                    f"upstream answered {body.status} for {download.filename}", status=body.status
                )
            if body.headers.get("Content-Encoding", "identity") != "identity":
                raise DownloadFailed("upstream sent an encoded file body")
            if not await self.disk.has_room(total or 0):
                raise DiskFull(f"less than {self.disk.needed_mib(total or 0)} MiB free")
            download.begin(total, body.headers.get("Last-Modified"))
            # With a kept tail only the bytes before it were asked for.
            asked = expected if download.tail is not None else None
            async for chunk in body.chunks:
                if asked is not None and download.written + len(chunk) > asked:
                    raise DownloadFailed(f"upstream sent more than the {expected} bytes asked for")
                try:
                    # Hashing in the same thread as the write: sha256 releases the GIL.
                    await asyncio.to_thread(digests.write, download.fd, chunk, download.written)
                except OSError as exc:
                    if exc.errno in NO_SPACE:
                        self.disk.note_full()
                        raise DiskFull("no space left while writing") from None
                    raise
                download.advance(len(chunk))
        if expected is not None and download.written != expected:
            raise DownloadFailed(
                f"upstream sent {download.written} bytes of {expected} for {download.filename}"
            )


def expected_sha256(source: FileSource) -> str | None:
    """The key a file would have in the shared tier, if the page states it."""
    return source.hash_value if source.hash_name == "sha256" else None


def _ranged_total(headers, tail: KeptTail) -> int:
    """The file's length by a 206 for the bytes before a kept tail, which must say exactly
    those bytes of a file of the kept length."""
    match = _CONTENT_RANGE.fullmatch(headers.get("Content-Range", "").strip())
    if match is None or (int(match[1]), int(match[2])) != (0, tail.start - 1):
        raise DownloadFailed("upstream answered a different range than asked for")
    if match[3] != "*" and int(match[3]) != tail.total:
        raise DownloadFailed(f"the file is {match[3]} bytes now, not {tail.total}")
    return tail.total


class _Digests:
    """sha256 always (the store records it), and the index's own algorithm if another."""

    def __init__(self, hash_name: str | None) -> None:
        self.sha256 = hashlib.sha256()
        self._other = hashlib.new(hash_name) if hash_name not in (None, "sha256") else None

    def write(self, fd: int, data: bytes, offset: int) -> None:
        write_at(fd, data, offset)
        self.update(data)

    def add_from(self, fd: int, start: int, end: int) -> None:
        """Hash bytes already in the file (a kept tail)."""
        while start < end:
            data = os.pread(fd, min(end - start, 1024 * 1024), start)
            if not data:
                raise DownloadFailed("the kept tail of the file is missing")
            self.update(data)
            start += len(data)

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self._other is not None:
            self._other.update(data)

    def checked(self) -> str:
        return (self._other or self.sha256).hexdigest()


def _facts(download: Download, size: int) -> dict[str, object]:
    facts: dict[str, object] = {"size": size}
    # Static file hosts answer with the time the file was written: its upload time.
    if download.last_modified:
        with contextlib.suppress(TypeError, ValueError):
            when = parsedate_to_datetime(download.last_modified).astimezone(timezone.utc)
            facts["upload-time"] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return facts


@dataclass(frozen=True)
class KeptTail:
    """A staging file holding a wheel's bytes from `start` to its end, `total`."""

    path: Path
    start: int
    total: int


class KeptTails:
    """Tails read for metadata, by (project, filename), until a download adopts or drops one."""

    def __init__(self, new_path: Callable[[], Path], limit: int = KEPT_TAILS) -> None:
        self._new_path = new_path
        self.limit = limit  # tails kept at most; the oldest goes first
        self._kept: OrderedDict[tuple[str, str], KeptTail] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def __iter__(self) -> Iterator[KeptTail]:
        """The tails kept, oldest first."""
        return iter(list(self._kept.values()))

    async def keep(self, key: tuple[str, str], start: int, data: bytes) -> None:
        """Keep `data`, the bytes of the file `key` from `start` to its end."""
        if key in self._kept or not data:
            return
        path = self._new_path()
        try:
            await asyncio.to_thread(_write_sparse, path, start, data)
        except OSError:  # only a saving lost: the download fetches the tail again
            return
        self._kept[key] = KeptTail(path, start, start + len(data))
        while len(self._kept) > self.limit:
            _, oldest = self._kept.popitem(last=False)
            discard_quietly(oldest.path)

    def take(self, key: tuple[str, str]) -> KeptTail | None:
        """The kept tail of `key`, now the caller's (its file included), or None."""
        return self._kept.pop(key, None)

    def drop(self, key: tuple[str, str]) -> None:
        kept = self._kept.pop(key, None)
        if kept is not None:
            discard_quietly(kept.path)

    def close(self) -> None:
        while self._kept:
            discard_quietly(self._kept.popitem()[1].path)


def _write_sparse(path: Path, start: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_at(fd, data, start)
    finally:
        os.close(fd)


def discard_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


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

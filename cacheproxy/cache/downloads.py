"""Cold files: one upstream download per file, shared by every client that asks meanwhile.

The download writes to a staging file and hashes as bytes arrive; clients read the staging
file behind it, so each streams at once and memory stays flat however many are waiting. Only
a file whose length and hash check out is committed to the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from datetime import timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

from cacheproxy.cache.upstream import Upstream, UpstreamError
from cacheproxy.simple.metadata import NoMetadata, extract_metadata
from cacheproxy.simple.page import FileSource
from cacheproxy.store.local import Store, StoredFile

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_RECENT_SECONDS = 10


class DownloadFailed(UpstreamError):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DiskFull(DownloadFailed):
    """No room to cache the file: it is passed through to the client uncached instead."""


# Free space kept beyond a file's size, so SQLite and the pages still have room.
DISK_RESERVE = 64 * 1024 * 1024
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class Download:
    """One upstream transfer in progress, observed by any number of readers."""

    def __init__(self, project: str, filename: str, source: FileSource, staging: Path) -> None:
        self.project = project
        self.filename = filename
        self.source = source
        self.staging = staging
        self.total: int | None = None
        self.last_modified: str | None = None
        self.written = 0
        self.committed = False
        self.error: DownloadFailed | None = None
        self.started = asyncio.Event()
        self._changed = asyncio.Event()
        self._read_fd: int | None = None
        self.task: asyncio.Task[None] | None = None
        # Byte ranges fetched from the upstream ahead of this download, by (first, last):
        # every client of a cold wheel asks for the same tail, and one fetch answers them all.
        self._ranges: dict[tuple[int, int], asyncio.Future[bytes | None]] = {}

    def open_reader(self) -> int:
        """A descriptor of the staging file for one reader; it outlives the rename on commit."""
        assert self._read_fd is not None
        return os.dup(self._read_fd)

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

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _fail(self, error: DownloadFailed) -> None:
        self.error = error
        self.started.set()
        self._notify()


class Downloads:
    def __init__(self, store: Store, upstream: Upstream) -> None:
        self.store = store
        self.upstream = upstream
        self._running: dict[tuple[str, str], Download] = {}
        # Files committed moments ago: a request that missed the store just before the commit
        # finds them here instead of starting a second download.
        self._recent: dict[tuple[str, str], StoredFile] = {}

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

    def join(self, project: str, filename: str, source: FileSource) -> tuple[Download, int]:
        """The running download of a file (started if none) and a reader descriptor for it."""
        key = (project, filename)
        download = self._running.get(key)
        if download is None:
            download = Download(project, filename, source, self.store.new_staging_path())
            # Created before anyone can read, so every reader's dup() has something to copy.
            fd = os.open(download.staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            download._read_fd = fd
            self._running[key] = download
            download.task = asyncio.create_task(self._run(download, fd))
        return download, download.open_reader()

    async def close(self) -> None:
        tasks = [d.task for d in self._running.values() if d.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, download: Download, fd: int) -> None:
        key = (download.project, download.filename)
        try:
            sha256 = await self._transfer(download, fd)
            stored = await self.store.commit_file(
                download.project, download.filename, download.staging, sha256
            )
            if stored is None:
                log.info("%s was served but not kept: it exceeds the cache size", download.filename)
            else:
                await self.store.learn(
                    download.project, download.filename, **_facts(download, stored.size)
                )
            if stored is not None and download.source.extract_metadata:
                # Before the clients get the last byte, so their next page shows the metadata.
                await extract_and_store(
                    self.store, download.project, download.filename, stored.path
                )
            if stored is not None:
                self._remember(key, stored)
            download.committed = True
            download._notify()
        except asyncio.CancelledError:
            download._fail(DownloadFailed("proxy is shutting down"))
            raise
        except DiskFull as exc:
            log.warning("disk full: %s is served without being cached (%s)", download.filename, exc)
            download._fail(exc)
        except DownloadFailed as exc:
            log.warning("download of %s failed: %s", download.filename, exc)
            download._fail(exc)
        except UpstreamError as exc:
            log.warning("download of %s failed: %s", download.filename, exc)
            download._fail(DownloadFailed(str(exc)))
        except OSError as exc:
            log.error("cannot store %s: %s", download.filename, exc)
            download._fail(DownloadFailed(f"cannot store the file: {exc.strerror or exc}"))
        finally:
            self._running.pop(key, None)
            os.close(fd)
            if not download.committed:
                await self.store.discard(download.staging)

    async def has_room(self, size: int) -> bool:
        free = await asyncio.to_thread(_free_bytes, self.store.staging_dir)
        return size + DISK_RESERVE <= free

    async def _ensure_room(self, size: int) -> None:
        if not await self.has_room(size):
            raise DiskFull(f"less than {(size + DISK_RESERVE) // 2**20} MiB free")

    async def _transfer(self, download: Download, fd: int) -> str:
        """Copy the upstream body to the staging file; the verified sha256 of its bytes."""
        source = download.source
        sha256 = hashlib.sha256()
        # An index that gives only another algorithm is checked with that one; sha256 is
        # always computed because the store records it.
        other = source.hash_name not in (None, "sha256")
        expected = hashlib.new(source.hash_name) if other else None
        async with self.upstream.open_file(source.url) as resp:
            if resp.status != 200:
                raise DownloadFailed(
                    f"upstream answered {resp.status} for {download.filename}", status=resp.status
                )
            if resp.headers.get("Content-Encoding", "identity") != "identity":
                raise DownloadFailed("upstream sent an encoded file body")
            download.total = resp.content_length if resp.content_length is not None else source.size
            download.last_modified = resp.headers.get("Last-Modified")
            await self._ensure_room(download.total or 0)
            download.started.set()
            async for chunk in resp.content.iter_chunked(_CHUNK):
                try:
                    await asyncio.to_thread(_write_all, fd, chunk, download.written)
                except OSError as exc:
                    if exc.errno in _NO_SPACE:
                        raise DiskFull("no space left while writing") from None
                    raise
                sha256.update(chunk)
                if expected is not None:
                    expected.update(chunk)
                download.written += len(chunk)
                download._notify()
        if download.total is not None and download.written != download.total:
            raise DownloadFailed(
                f"upstream sent {download.written} bytes of {download.total} for "
                f"{download.filename}"
            )
        download.total = download.written
        digest = (expected or sha256).hexdigest()
        if source.hash_value is not None and digest != source.hash_value:
            raise DownloadFailed(
                f"{download.filename} does not match its {source.hash_name or 'sha256'} hash"
            )
        return sha256.hexdigest()


def _facts(download: Download, size: int) -> dict[str, object]:
    facts: dict[str, object] = {"size": size}
    # Static file hosts answer with the time the file was written: its upload time.
    if download.last_modified:
        with contextlib.suppress(TypeError, ValueError):
            when = parsedate_to_datetime(download.last_modified).astimezone(timezone.utc)
            facts["upload-time"] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return facts


async def extract_and_store(store: Store, project: str, wheel: str, path: str) -> bytes | None:
    """Extract a cached wheel's METADATA into the store; None if the wheel has none usable."""
    try:
        data = await asyncio.to_thread(extract_metadata, path, wheel)
        await store.put_extracted_metadata(project, wheel, data, hashlib.sha256(data).hexdigest())
        return data
    except (NoMetadata, OSError) as exc:
        log.warning("no metadata extracted from %s: %s", wheel, exc)
        return None


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)

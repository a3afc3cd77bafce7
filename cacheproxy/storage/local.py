"""The on-disk store: diskcache holds the index (pages, file records, sizes, LRU eviction) and
the artifacts themselves stay plain files that are served by path.

A downloaded file is staged in tmp/, verified, then renamed into diskcache's own file layout
in the same transaction that records it, so a file is either wholly in the index or not there.

The store is made of three parts, each in its own module: `entries` (storage/entries.py: the
diskcache, read without writes, access times written in batches, eviction), `versions`
(storage/versions.py: the page versions every process sees) and `maintenance`
(storage/maintenance.py: list, purge, prune, verify). Pages, API documents, files, file facts
and takedowns are here. What the services use of it is named in storage/port.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import diskcache

from cacheproxy.storage.entries import (
    ACCESS_FLUSH_SECONDS,
    API_DOCUMENT,
    FACTS,
    FILE,
    PAGE,
    TAKEN_DOWN,
    Entries,
    StagedFile,
)
from cacheproxy.storage.maintenance import Maintenance, VerifyReport
from cacheproxy.storage.port import FileFacts, StorePort
from cacheproxy.storage.records import (
    CachedDocument,
    CachedPage,
    StoredFile,
    decode_page,
    encode_page,
)
from cacheproxy.storage.versions import Versions


class Store:
    """Blocking store operations (the *_sync methods) run in a worker thread; the others are
    async."""

    def __init__(
        self, cache_dir: Path, size_limit: int, access_flush_seconds: float = ACCESS_FLUSH_SECONDS
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.staging_dir = self.cache_dir / "tmp"
        self.entries = Entries(self.cache_dir / "store", size_limit, access_flush_seconds)
        self.versions = Versions(self.entries)
        self.maintenance = Maintenance(self.entries, self.versions)
        self.evictions = 0  # entries removed to stay under the size limit, by this process

    # -- lifecycle -------------------------------------------------------------------------

    def open_sync(self, clean_staging: bool = True) -> None:
        """Open the store; the server cleans staging, a command run beside it must not."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if clean_staging:
            # Whatever is in staging was cut off by a crash: never complete, never verified.
            shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.staging_dir.mkdir(exist_ok=True)
        self.entries.open()

    async def open(self) -> None:
        await asyncio.to_thread(self.open_sync)

    def close_sync(self) -> None:
        self.entries.close()

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    @property
    def cache(self) -> diskcache.Cache:
        """The diskcache itself (for its size and entry count; a get on it is a write)."""
        return self.entries.cache

    # -- pages -----------------------------------------------------------------------------

    def read_page(self, project: str) -> CachedPage | None:
        """The stored page in its compact form; entries pickled before still load."""
        return decode_page(self.entries.value((PAGE, project)))

    async def get_page(self, project: str) -> CachedPage | None:
        return await asyncio.to_thread(self.read_page, project)

    def put_page_sync(self, project: str, entry: CachedPage) -> int:
        value = encode_page(entry)
        cache = self.entries.cache
        with self.entries.write_lock, cache.transact():
            # The status as the tag, so the project list needs no page read.
            cache.set((PAGE, project), value, tag=f"page-{entry.status}")
            return self.versions.bump_page(project)

    async def put_page(self, project: str, entry: CachedPage) -> None:
        await asyncio.to_thread(self.put_page_sync, project, entry)
        self.versions.forget(project)  # this process sees its own write at once

    async def page_with_version(self, project: str) -> tuple[tuple[int, int], CachedPage | None]:
        """stored_page_version() and the stored page (get_page()) in one turn of the thread
        pool, the version read first: what is read is current while it is unchanged."""
        self.versions.look()
        epoch = self.versions.epoch

        def read() -> tuple[int, tuple[int, int], CachedPage | None]:
            generation, counters = self.versions.read(project)
            return generation, counters, self.read_page(project)

        generation, counters, page = await asyncio.to_thread(read)
        self.versions.remember(project, generation, counters, epoch)
        return (generation, counters[0]), page

    async def page_version(self, project: str) -> tuple[int, int, int]:
        """See Versions.page_version."""
        return await self.versions.page_version(project)

    async def stored_page_version(self, project: str) -> tuple[int, int]:
        """See Versions.stored_page_version."""
        return await self.versions.stored_page_version(project)

    async def projects(self) -> list[str]:
        """Projects the upstream has a page for, read without a write or an unpickled page."""

        def collect() -> list[str]:
            names = set()
            for key in self.entries.all_keys():
                if not (isinstance(key, tuple) and len(key) == 2 and key[0] == PAGE):
                    continue
                tag = self.entries.tag(key)
                if tag == "page-200" or (tag is None and self._is_found(key[1])):
                    names.add(key[1])
            return sorted(names)

        return await asyncio.to_thread(collect)

    def _is_found(self, project: str) -> bool:
        # Pages stored before the tag held the status: read once, the way they always were.
        page = self.read_page(project)
        return page is not None and page.status == 200

    # JSON API documents (/pypi/PROJECT[/VERSION]/json), release "" for the project's. A
    # write bumps no version: no page or file fact depends on them, and a purge (which bumps)
    # removes them with the rest of the project.

    async def get_api_document(self, project: str, release: str) -> CachedDocument | None:
        return await asyncio.to_thread(self.entries.value, (API_DOCUMENT, project, release))

    def _put_api_document(self, key: tuple[str, str, str], entry: CachedDocument) -> None:
        with self.entries.write_lock:
            self.entries.cache.set(key, entry, tag=API_DOCUMENT, retry=True)

    async def put_api_document(self, project: str, release: str, entry: CachedDocument) -> None:
        await asyncio.to_thread(self._put_api_document, (API_DOCUMENT, project, release), entry)

    # -- files -----------------------------------------------------------------------------

    def find_file_sync(self, project: str, filename: str) -> StoredFile | None:
        return self.entries.stored_file((FILE, project, filename))

    async def find_file(self, project: str, filename: str) -> StoredFile | None:
        return await asyncio.to_thread(self.find_file_sync, project, filename)

    def new_staging_path(self) -> Path:
        return self.staging_dir / f"{os.urandom(12).hex()}.part"

    def commit_file_sync(
        self, project: str, filename: str, staged: Path, sha256: str
    ) -> StoredFile | None:
        """Move a verified file into the store, then evict least recently used entries down
        to the size limit. None when the file itself was evicted at once (larger than what
        the cache may hold): it was complete, so it is still served, just not kept."""
        with open(staged, "rb") as fh:
            os.fsync(fh.fileno())
        cache = self.entries.cache
        with self.entries.write_lock:
            with cache.transact():
                cache.set((FILE, project, filename), StagedFile(staged), tag=sha256)
                self.entries.files_changed()
            self.evictions += self.entries.cull()  # by the real last use
        return self.find_file_sync(project, filename)

    async def commit_file(
        self, project: str, filename: str, staged: Path, sha256: str
    ) -> StoredFile | None:
        return await asyncio.to_thread(self.commit_file_sync, project, filename, staged, sha256)

    async def discard(self, path: Path) -> None:
        def remove() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

        await asyncio.to_thread(remove)

    # -- what the proxy learned about files it cached ------------------------------------

    def learn_sync(self, project: str, filename: str, facts: dict[str, object]) -> int:
        cache = self.entries.cache
        # A lock across processes: two files of one project may finish at once.
        with self.entries.write_lock, cache.transact():
            known = cache.get((FACTS, project), {})
            known[filename] = {**known.get(filename, {}), **facts}
            cache.set((FACTS, project), known)
            return self.versions.bump_facts(project)

    async def learn(self, project: str, filename: str, **facts: object) -> None:
        """Remember facts about a cached file (size, upload-time, metadata-sha256) that an
        index may not state, so pages can show them."""
        await asyncio.to_thread(self.learn_sync, project, filename, facts)
        self.versions.forget(project)

    def file_facts_sync(self, project: str) -> FileFacts:
        """filename -> facts learned from the cached file."""
        facts: FileFacts = self.entries.value((FACTS, project), {})
        return facts

    async def file_facts(self, project: str) -> FileFacts:
        return await asyncio.to_thread(self.file_facts_sync, project)

    def _put_extracted(self, project: str, wheel: str, data: bytes, sha256: str) -> int:
        staged = self.new_staging_path()
        with open(staged, "xb") as fh:
            fh.write(data)
        self.commit_file_sync(project, wheel + ".metadata", staged, sha256)
        return self.learn_sync(project, wheel, {"metadata-sha256": sha256})

    async def put_extracted_metadata(
        self, project: str, wheel: str, data: bytes, sha256: str
    ) -> None:
        await asyncio.to_thread(self._put_extracted, project, wheel, data, sha256)
        self.versions.forget(project)

    # -- takedowns -------------------------------------------------------------------------

    def forget_taken_down(self, project: str, filenames: list[str], now: float) -> int:
        """Files the upstream no longer lists leave the cache (with their .metadata and
        .provenance), and are remembered as taken down so a request for one says so."""
        cache = self.entries.cache
        removed = 0
        with self.entries.write_lock, cache.transact():
            for filename in filenames:
                for name in (filename, filename + ".metadata", filename + ".provenance"):
                    removed += bool(cache.delete((FILE, project, name)))
            known = cache.get((TAKEN_DOWN, project), {})
            known.update(dict.fromkeys(filenames, now))
            cache.set((TAKEN_DOWN, project), known)
            self.entries.files_changed()
            self.versions.bump_page(project)
        return removed

    def taken_down(self, project: str) -> dict[str, float]:
        """filename -> when the proxy saw it gone from the upstream's page."""
        gone: dict[str, float] = self.entries.value((TAKEN_DOWN, project), {})
        return gone

    # -- maintenance (for the cache commands; blocking): see storage/maintenance.py --------

    def file_records(self) -> list[tuple[str, str, int, float]]:
        return self.maintenance.file_records()

    def purge_project(self, project: str) -> int:
        return self.maintenance.purge_project(project)

    def prune(self, max_size: int | None, older_than: float | None, now: float) -> int:
        return self.maintenance.prune(max_size, older_than, now)

    def verify_sync(self) -> VerifyReport:
        return self.maintenance.verify_sync()

    # -- numbers ---------------------------------------------------------------------------

    def usage_sync(self) -> tuple[int, int, int]:
        """Bytes on disk (files and the index), the number of entries and of stored files."""
        cache = self.entries.cache
        return cache.volume(), len(cache), self.entries.file_count()

    async def usage(self) -> tuple[int, int, int]:
        return await asyncio.to_thread(self.usage_sync)

    def _writable(self) -> bool:
        probe = self.staging_dir / f"ready-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
            return True
        except OSError:
            return False

    async def writable(self) -> bool:
        return await asyncio.to_thread(self._writable)


if TYPE_CHECKING:  # the type checker holds Store to its port
    _store_port: StorePort = Store(Path(), 0)

"""The on-disk store: diskcache holds the index (pages, file records, sizes, LRU eviction) and
the artifacts themselves stay plain files that are served by path.

A downloaded file is staged in tmp/, verified, then renamed into diskcache's own file layout
in the same transaction that records it, so a file is either wholly in the index or not there.

Reads do not write. diskcache's least-recently-used policy turns every get into a write
transaction (it stamps the row's access time), so each cache hit would take SQLite's write
lock. Here a hit is a plain SELECT; the access time is noted in memory and the noted times are
written in one transaction before anything is evicted, and otherwise at most every
ACCESS_FLUSH_SECONDS, so eviction still goes by last use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import diskcache

from cacheproxy.storage import pagecodec
from cacheproxy.storage.maintenance import FILE, PAGE, Maintenance
from cacheproxy.storage.records import CachedPage
from cacheproxy.storage.stored_files import RenamingDisk, StagedFile, StoredFile
from cacheproxy.storage.versions import Versions

log = logging.getLogger(__name__)

_FACTS = "file-facts"
API_DOCUMENT = "pypi-json"

ACCESS_FLUSH_SECONDS = 5.0
_SELECT = (
    "SELECT rowid, tag, mode, filename, value FROM Cache"
    " WHERE key = ? AND raw = ? AND (expire_time IS NULL OR expire_time > ?)"
)
# max(): a row replaced since the read already carries a newer time.
_TOUCH = "UPDATE Cache SET access_time = max(access_time, ?) WHERE rowid = ?"


class Store(Versions, Maintenance):
    """Blocking store operations run in a worker thread; the public methods are async."""

    def __init__(self, cache_dir: Path, size_limit: int) -> None:
        self.cache_dir = Path(cache_dir)
        self.staging_dir = self.cache_dir / "tmp"
        self._size_limit = size_limit
        self._init_versions()
        self.evictions = 0  # entries removed to stay under the size limit, by this process
        self._cache: diskcache.Cache | None = None
        self._accessed: dict[int, float] = {}  # rowid -> when it was last read
        self._accessed_lock = threading.Lock()
        # This process's writes take turns: SQLite sleeps a writer that finds the database
        # locked (1, 2, 5 ... 100 ms) before it tries again, so a dozen threads writing at
        # once waited up to 200 ms each. Other processes still meet SQLite's own lock.
        self._write_lock = threading.RLock()
        self._flushed_at = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def open_sync(self, clean_staging: bool = True) -> None:
        """Open the store; the server cleans staging, a command run beside it must not."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if clean_staging:
            # Whatever is in staging was cut off by a crash: never complete, never verified.
            shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.staging_dir.mkdir(exist_ok=True)
        self._cache = diskcache.Cache(
            str(self.cache_dir / "store"),
            disk=RenamingDisk,
            size_limit=self._size_limit,
            eviction_policy="least-recently-used",
            # Evict only after a file is committed, and only as much as needed (cull()),
            # rather than a fixed batch on every write, pages included.
            cull_limit=0,
        )

    async def open(self) -> None:
        await asyncio.to_thread(self.open_sync)

    def close_sync(self) -> None:
        if self._cache is not None:
            self.flush_access_times()
            self._cache.close()
            self._cache = None

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    @property
    def cache(self) -> diskcache.Cache:
        if self._cache is None:
            raise RuntimeError("store is not open")
        return self._cache

    # -- reads without writes --------------------------------------------------------------

    def _row(self, key: tuple) -> tuple | None:
        """(rowid, tag, mode, filename, value) of a live entry, noting that it was used."""
        cache = self.cache
        db_key, raw = cache._disk.put(key)
        rows = cache._sql(_SELECT, (db_key, raw, time.time())).fetchall()
        if not rows:
            return None
        now = time.time()
        with self._accessed_lock:
            self._accessed[rows[0][0]] = now
        if now - self._flushed_at >= ACCESS_FLUSH_SECONDS:
            self.flush_access_times(wait=False)
        return rows[0]

    def _value(self, key: tuple, default=None):
        row = self._row(key)
        if row is None:
            return default
        _, _, mode, filename, value = row
        try:
            return self.cache._disk.fetch(mode, filename, value, False)
        except OSError:  # removed since the SELECT (evicted, purged)
            return default

    def flush_access_times(self, wait: bool = True) -> None:
        """Write the access times noted since the last flush, in one transaction."""
        if not self._write_lock.acquire(blocking=wait):
            return  # another thread is writing: a read must not wait for it
        try:
            with self._accessed_lock:
                pending, self._accessed = self._accessed, {}
                self._flushed_at = time.time()
            if pending:
                with self.cache.transact():
                    self.cache._con.executemany(_TOUCH, [(t, r) for r, t in pending.items()])
        except (sqlite3.Error, diskcache.Timeout) as exc:
            # Access times only order eviction: a full disk or a busy database must not turn a
            # cache hit (or a shutdown) into an error. These times are lost, later ones are not.
            log.warning("could not record cache access times: %s", exc)
        finally:
            self._write_lock.release()

    # -- pages -----------------------------------------------------------------------------

    async def get_page(self, project: str) -> CachedPage | None:
        return await asyncio.to_thread(self._read_page, project)

    def _put_page(self, project: str, entry: CachedPage) -> int:
        value = pagecodec.encode(entry)
        with self._write_lock, self.cache.transact():
            # The status as the tag, so the project list needs no page read.
            self.cache.set((PAGE, project), value, tag=f"page-{entry.status}")
            return self._bump(project)

    async def put_page(self, project: str, entry: CachedPage) -> None:
        await asyncio.to_thread(self._put_page, project, entry)
        self._versions.pop(project, None)  # this process sees its own write at once

    # JSON API documents (/pypi/PROJECT[/VERSION]/json), release "" for the project's. A
    # write bumps no version: no page or file fact depends on them, and a purge (which bumps)
    # removes them with the rest of the project.

    async def get_api_document(self, project: str, release: str) -> object | None:
        return await asyncio.to_thread(self._value, (API_DOCUMENT, project, release))

    def _put_api_document(self, key: tuple, entry: object) -> None:
        with self._write_lock:
            self.cache.set(key, entry, tag=API_DOCUMENT, retry=True)

    async def put_api_document(self, project: str, release: str, entry: object) -> None:
        await asyncio.to_thread(self._put_api_document, (API_DOCUMENT, project, release), entry)

    async def projects(self) -> list[str]:
        """Projects the upstream has a page for, read without a write or an unpickled page."""

        def collect() -> list[str]:
            rows = self.cache._sql("SELECT key, raw, tag FROM Cache")
            names = set()
            for db_key, raw, tag in rows.fetchall():
                key = self.cache._disk.get(db_key, raw)
                if not (isinstance(key, tuple) and len(key) == 2 and key[0] == PAGE):
                    continue
                if tag == "page-200" or (tag is None and self._is_found(key)):
                    names.add(key[1])
            return sorted(names)

        return await asyncio.to_thread(collect)

    def _is_found(self, key: tuple) -> bool:
        # Pages stored before the tag held the status: read once, the way they always were.
        return getattr(self._value(key), "status", None) == 200

    # -- files -----------------------------------------------------------------------------

    def _find_file(self, project: str, filename: str) -> StoredFile | None:
        row = self._row((FILE, project, filename))
        if row is None or row[3] is None:
            return None
        path = os.path.join(self.cache.directory, row[3])
        try:
            info = os.stat(path)
        except FileNotFoundError:  # evicted or purged since the SELECT
            return None
        return StoredFile(path, row[1] or "", info.st_size, info.st_mtime)

    async def find_file(self, project: str, filename: str) -> StoredFile | None:
        return await asyncio.to_thread(self._find_file, project, filename)

    def new_staging_path(self) -> Path:
        return self.staging_dir / f"{os.urandom(12).hex()}.part"

    def _commit_file(
        self, project: str, filename: str, staged: Path, sha256: str
    ) -> StoredFile | None:
        """Move a verified file into the store, then evict least recently used entries down
        to the size limit. None when the file itself was evicted at once (larger than what
        the cache may hold): it was complete, so it is still served, just not kept."""
        with open(staged, "rb") as fh:
            os.fsync(fh.fileno())
        with self._write_lock:
            self.cache.set((FILE, project, filename), StagedFile(staged), tag=sha256)
            self.flush_access_times()  # evict by the real last use
            self.evictions += self.cache.cull()
        return self._find_file(project, filename)

    async def commit_file(
        self, project: str, filename: str, staged: Path, sha256: str
    ) -> StoredFile | None:
        return await asyncio.to_thread(self._commit_file, project, filename, staged, sha256)

    async def discard(self, path: Path) -> None:
        def remove() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

        await asyncio.to_thread(remove)

    # -- what the proxy learned about files it cached ------------------------------------

    def _write_staged(self, data: bytes) -> Path:
        path = self.new_staging_path()
        with open(path, "xb") as fh:
            fh.write(data)
        return path

    def _learn(self, project: str, filename: str, facts: dict[str, object]) -> int:
        # A lock across processes: two files of one project may finish at once.
        with self._write_lock, self.cache.transact():
            known = self.cache.get((_FACTS, project), {})
            known[filename] = {**known.get(filename, {}), **facts}
            self.cache.set((_FACTS, project), known)
            return self._bump_facts(project)

    async def learn(self, project: str, filename: str, **facts: object) -> None:
        """Remember facts about a cached file (size, upload-time, metadata-sha256) that an
        index may not state, so pages can show them."""
        await asyncio.to_thread(self._learn, project, filename, facts)
        self._versions.pop(project, None)

    def _put_extracted(self, project: str, wheel: str, data: bytes, sha256: str) -> int:
        self._commit_file(project, wheel + ".metadata", self._write_staged(data), sha256)
        return self._learn(project, wheel, {"metadata-sha256": sha256})

    async def put_extracted_metadata(
        self, project: str, wheel: str, data: bytes, sha256: str
    ) -> None:
        await asyncio.to_thread(self._put_extracted, project, wheel, data, sha256)
        self._versions.pop(project, None)

    async def file_facts(self, project: str) -> dict[str, dict[str, object]]:
        """filename -> facts learned from the cached file."""
        return await asyncio.to_thread(self._value, (_FACTS, project), {})

    # -- numbers ---------------------------------------------------------------------------

    async def usage(self) -> tuple[int, int, int]:
        """Bytes on disk (files and the index), the number of entries and of stored files."""

        def measure() -> tuple[int, int, int]:
            files = self.cache._sql("SELECT COUNT(*) FROM Cache WHERE filename IS NOT NULL")
            return self.cache.volume(), len(self.cache), files.fetchone()[0]

        return await asyncio.to_thread(measure)

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

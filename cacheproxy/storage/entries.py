"""The diskcache the store runs on, through its public API: the keys it holds, reads that do
not write, access times written in batches, and eviction.

diskcache's least-recently-used policy turns every get into a write transaction (it stamps the
row's access time), so each cache hit would take SQLite's write lock. The cache is therefore
opened twice. `cache` has that policy and takes every write, transaction and eviction. The
second handle, for reads, has its eviction policy set to "none" for this process only
(`Cache.reset(..., update=False)`: the policy stored in the cache, which every other process
reads, stays least-recently-used), so a hit is a plain SELECT. The keys read are noted in
memory and stamped through `cache` (a get under its policy) in one transaction before anything
is evicted, and otherwise at most every ACCESS_FLUSH_SECONDS, so eviction still goes by last
use.

diskcache opens one SQLite connection per thread per handle, each with the pragmas stored in
the cache: a 64 MiB memory map of the database and a page cache of 8192 pages (32 MiB). Every
worker thread would hold two maps and two page caches of the same file (the flush reads each
value again through `cache`), and the process's RSS counts each. So each thread's connections
are set, for this process only (`Cache.reset(..., update=False)`), to read without a memory map
and with a page cache of CACHE_PAGES. Measured on a 117 MiB store of 20 kB values, 6 threads
reading 20,000 at random each, then one flush: peak RSS 798 MiB before, 62 after; one thread's
CPU per read 30-34 us either way, the flush of 6,000 keys 0.40 s instead of 0.32.

Both handles run on RenamingDisk: a verified file waiting in staging (StagedFile) is moved into
diskcache's own file layout instead of copied.
"""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeGuard

import diskcache

from cacheproxy.storage.records import StoredFile

log = logging.getLogger(__name__)

# What the store holds, by key.
PAGE = "page"  # (PAGE, project): the page (records.encode_page), tagged page-<status>
FILE = "file"  # (FILE, project, filename): a stored file, tagged with its sha256
FACTS = "file-facts"  # (FACTS, project): filename -> what was learned about the cached file
API_DOCUMENT = "pypi-json"  # (API_DOCUMENT, project, release): a JSON API document
TAKEN_DOWN = "taken-down"  # (TAKEN_DOWN, project): filename -> when it left the upstream
# The counters behind every page version (storage/versions.py): two per project, one for the
# store, and a token set anew with every bump of any of them.
VERSION = "version"  # (VERSION, project)
FACTS_VERSION = "facts-version"  # (FACTS_VERSION, project)
GENERATION = ("generation",)
CHANGED = "changed"
# A token set anew whenever stored files come or go, so they are counted only then.
FILES_CHANGED = "files-changed"

ACCESS_FLUSH_SECONDS = 5.0
# Each thread's connections: no memory map, a page cache of this many pages (4 MiB at SQLite's
# 4 KiB pages), enough for the inner pages of a large store's B-tree.
CACHE_PAGES = 1024
_MISSING = object()


@dataclass(frozen=True)
class StagedFile:
    """A complete, verified file in the staging directory, ready to be moved into the store."""

    path: Path


class RenamingDisk(diskcache.Disk):
    """diskcache's Disk, except that a StagedFile is moved into place instead of copied."""

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if isinstance(value, StagedFile):
            filename, full_path = self.filename(key, value)
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            os.rename(value.path, full_path)
            return os.path.getsize(full_path), diskcache.core.MODE_BINARY, filename, None
        return super().store(value, read, key)


def is_file_key(key: object) -> TypeGuard[tuple[str, str, str]]:
    return isinstance(key, tuple) and len(key) == 3 and key[0] == FILE


class Entries:
    """One diskcache, read without writes. Blocking: for a worker thread or the CLI."""

    def __init__(
        self, directory: Path, size_limit: int, flush_seconds: float = ACCESS_FLUSH_SECONDS
    ) -> None:
        self.directory = directory
        self.size_limit = size_limit
        self.flush_seconds = flush_seconds
        # This process's writes take turns: SQLite sleeps a writer that finds the database
        # locked (1, 2, 5 ... 100 ms) before it tries again, so a dozen threads writing at
        # once waited up to 200 ms each. Other processes still meet SQLite's own lock.
        self.write_lock = threading.RLock()
        self._cache: diskcache.Cache | None = None
        self._reads: diskcache.Cache | None = None
        self._tuned = threading.local()  # .pid: this thread's connections are set up
        self._accessed: dict[Hashable, float] = {}  # key -> when it was last read
        self._accessed_lock = threading.Lock()
        self._flushed_at = 0.0
        self._file_count: tuple[object, int] | None = None  # (FILES_CHANGED token, count)

    def open(self) -> None:
        self._cache = diskcache.Cache(
            str(self.directory),
            disk=RenamingDisk,
            size_limit=self.size_limit,
            eviction_policy="least-recently-used",
            # Evict only after a file is committed, and only as much as needed (cull()),
            # rather than a fixed batch on every write, pages included.
            cull_limit=0,
        )
        reads = diskcache.Cache(str(self.directory), disk=RenamingDisk)
        reads.reset("eviction_policy", "none", update=False)
        reads.reset("statistics", 0, update=False)
        self._tuned = threading.local()
        self._reads = reads

    def close(self) -> None:
        if self._cache is not None and self._reads is not None:
            self.flush_access_times()
            self._reads.close()
            self._cache.close()
            self._cache = self._reads = None

    @property
    def cache(self) -> diskcache.Cache:
        """The cache for writes, transactions and eviction (a get here is a write too)."""
        return self._in_this_thread(self._cache)

    @property
    def _reader(self) -> diskcache.Cache:
        return self._in_this_thread(self._reads)

    def _in_this_thread(self, handle: diskcache.Cache | None) -> diskcache.Cache:
        if handle is None:
            raise RuntimeError("store is not open")
        if getattr(self._tuned, "pid", None) != os.getpid():
            self._tune()
        return handle

    def _tune(self) -> None:
        """Set this thread's connections (opened now, or again after a fork, with the pragmas
        stored in the cache) to the smaller memory of this process's own."""
        for handle in (self._cache, self._reads):
            if handle is not None:
                handle.reset("sqlite_mmap_size", 0, update=False)
                handle.reset("sqlite_cache_size", CACHE_PAGES, update=False)
        self._tuned.pid = os.getpid()

    # -- reads without writes --------------------------------------------------------------

    def value(self, key: Hashable, default: Any = None) -> Any:
        """The value at key, read without a write; its use is noted for eviction."""
        value = self._reader.get(key, _MISSING)
        if value is _MISSING:  # absent, or its file removed since the SELECT
            return default
        self._note(key)
        return value

    def peek(self, key: Hashable, default: Any = None) -> Any:
        """The value at key, read without a write and without noting the use (a token)."""
        return self._reader.get(key, default)

    def open_file(self, key: Hashable) -> tuple[BinaryIO | None, str | None]:
        """The file stored at key, open, and its tag, read without a write and without noting
        the use; (None, None) when absent or removed since."""
        handle, tag = self._reader.get(key, read=True, tag=True)
        if not isinstance(handle, io.BufferedReader):
            _close(handle)
            return None, None
        return handle, tag

    def stored_file(self, key: Hashable, note: bool = True) -> StoredFile | None:
        """The file stored at key, its use noted (unless note is False); None when absent or
        removed since."""
        handle, tag = self.open_file(key)
        if handle is None:
            return None
        with handle:
            info = os.fstat(handle.fileno())
        if note:
            self._note(key)
        return StoredFile(handle.name, tag or "", info.st_size, info.st_mtime)

    def tag(self, key: Hashable) -> str | None:
        """The tag of the entry at key, read without a write; a value kept as a file is
        opened, not read (one pickled by earlier versions is still loaded)."""
        value, tag = self._reader.get(key, read=True, tag=True)
        _close(value)
        return tag

    def all_keys(self) -> list[Hashable]:
        """Every key, in the order stored."""
        return list(self._reader)

    def file_count(self) -> int:
        """How many files the store holds, counted again only when files came or went."""
        token = self.peek(FILES_CHANGED)
        known = self._file_count
        if token is None or known is None or known[0] != token:
            known = self._file_count = (token, sum(map(is_file_key, self._reader)))
        return known[1]

    # -- writes ----------------------------------------------------------------------------

    def files_changed(self) -> None:
        """Note that stored files came or went: in the writer's transaction."""
        self.cache.set(FILES_CHANGED, os.urandom(8), retry=True)

    def _note(self, key: Hashable) -> None:
        now = time.time()
        with self._accessed_lock:
            self._accessed[key] = now
        if now - self._flushed_at >= self.flush_seconds:
            self.flush_access_times(wait=False)

    @property
    def pending_access_times(self) -> int:
        """How many reads wait to be written as access times."""
        return len(self._accessed)

    def flush_access_times(self, wait: bool = True) -> None:
        """Stamp the entries read since the last flush as used, in one transaction, in the
        order they were read (at the time of the flush: diskcache's get stamps "now")."""
        if not self.write_lock.acquire(blocking=wait):
            return  # another thread is writing: a read must not wait for it
        try:
            with self._accessed_lock:
                pending, self._accessed = self._accessed, {}
                self._flushed_at = time.time()
            if pending:
                cache = self.cache
                with cache.transact():
                    for key in sorted(pending, key=pending.__getitem__):
                        _close(cache.get(key, read=True))
        except (sqlite3.Error, diskcache.Timeout) as exc:
            # Access times only order eviction: a full disk or a busy database must not turn a
            # cache hit (or a shutdown) into an error. These times are lost, later ones are not.
            log.warning("could not record cache access times: %s", exc)
        finally:
            self.write_lock.release()

    def cull(self, size_limit: int | None = None) -> int:
        """Evict the least recently used entries down to the size limit (or to size_limit,
        this once), the reads noted so far written first. The number of entries evicted."""
        cache = self.cache
        with self.write_lock:
            self.flush_access_times()
            if size_limit is None:
                removed = cache.cull()
            else:
                cache.reset("size_limit", size_limit)
                try:
                    removed = cache.cull()
                finally:
                    cache.reset("size_limit", self.size_limit)
            if removed:
                self.files_changed()
        return removed


def _close(value: object) -> None:
    """Close what a get with read=True opened (a value kept as a file)."""
    if isinstance(value, io.IOBase):
        value.close()

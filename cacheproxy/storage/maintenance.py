"""The store's maintenance: listing, purging, pruning and verifying what it holds. Blocking,
for the cache commands (which run beside a running server) or a worker thread.

Every removal bumps a version the running servers read (see Store.page_version), so what they
keep in memory goes stale at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import threading
from dataclasses import dataclass

import diskcache

PAGE = "page"
FILE = "file"
# Counters that make what a process keeps in memory go stale: two per project, one bumped by
# every write to its page and by a purge, one by every fact learned about its files (a page
# read from the store stays current while facts come in; a page as served does not); and one
# for the whole store, bumped by prune and verify. They live in the store, so every process
# sees every other's writes.
VERSION = "version"
FACTS_VERSION = "facts-version"
GENERATION = ("generation",)
TAKEN_DOWN = "taken-down"
_COUNTERS = (VERSION, FACTS_VERSION)


class Maintenance:
    cache: diskcache.Cache
    _size_limit: int
    _write_lock: threading.RLock  # the store's: this process's writes one at a time

    def _bump(self, project: str) -> int:
        return self.cache.incr((VERSION, project), default=0, retry=True)

    def _bump_facts(self, project: str) -> int:
        return self.cache.incr((FACTS_VERSION, project), default=0, retry=True)

    def flush_access_times(self, wait: bool = True) -> None:  # the store's own
        raise NotImplementedError

    def _forget_versions(self) -> None:
        """Make this process read the versions again at once (the store's own)."""

    def _value(self, key: tuple, default=None):  # the store's own: a read without a write
        raise NotImplementedError

    # -- takedowns -------------------------------------------------------------------------

    def forget_taken_down(self, project: str, filenames: list[str], now: float) -> int:
        """Files the upstream no longer lists leave the cache (with their .metadata and
        .provenance), and are remembered as taken down so a request for one says so."""
        removed = 0
        with self._write_lock, self.cache.transact():
            for filename in filenames:
                for name in (filename, filename + ".metadata", filename + ".provenance"):
                    removed += bool(self.cache.delete((FILE, project, name)))
            known = self.cache.get((TAKEN_DOWN, project), {})
            known.update(dict.fromkeys(filenames, now))
            self.cache.set((TAKEN_DOWN, project), known)
            self._bump(project)
        return removed

    def taken_down(self, project: str) -> dict[str, float]:
        """filename -> when the proxy saw it gone from the upstream's page."""
        return self._value((TAKEN_DOWN, project), {})

    # -- maintenance (for the cache commands; blocking) ------------------------------------

    def file_records(self) -> list[tuple[str, str, int, float]]:
        """(project, filename, size, stored_at) of every stored file."""
        records = []
        for key in list(self.cache.iterkeys()):
            if isinstance(key, tuple) and key[0] == FILE:
                handle = self.cache.get(key, read=True)
                if handle is None:
                    continue
                with handle:
                    info = os.fstat(handle.fileno())
                records.append((key[1], key[2], info.st_size, info.st_mtime))
        return records

    def purge_project(self, project: str) -> int:
        """Forget a project: its page, its files and what was learned about them."""
        removed = 0
        for key in list(self.cache.iterkeys()):
            ours = isinstance(key, tuple) and len(key) > 1 and key[1] == project
            if ours and key[0] not in _COUNTERS:
                removed += bool(self.cache.delete(key))
        self._bump(project)
        self._forget_versions()
        return removed

    def _bump_generation(self) -> None:
        self.cache.incr(GENERATION, default=0, retry=True)
        self._forget_versions()

    def prune(self, max_size: int | None, older_than: float | None, now: float) -> int:
        """Remove files stored before now - older_than, then least recently used entries
        until the cache is under max_size. The number of entries removed."""
        removed = 0
        if older_than is not None:
            for project, filename, _, stored_at in self.file_records():
                if now - stored_at > older_than:
                    removed += bool(self.cache.delete((FILE, project, filename)))
        if max_size is not None:
            self.flush_access_times()
            self.cache.reset("size_limit", max_size)
            try:
                removed += self.cache.cull()
            finally:
                self.cache.reset("size_limit", self._size_limit)
        self._bump_generation()
        return removed

    # -- integrity -------------------------------------------------------------------------

    def verify_sync(self) -> VerifyReport:
        """Re-hash every stored file against the sha256 it was stored under and drop those
        that no longer match (disk faults, hand edits). Blocking: for the CLI or a thread."""
        report = VerifyReport()
        for key in list(self.cache.iterkeys()):
            if not (isinstance(key, tuple) and key[0] == FILE):
                continue
            handle, expected = self.cache.get(key, read=True, tag=True)
            if handle is None:
                continue
            with handle:
                digest = hashlib.sha256()
                while block := handle.read(1024 * 1024):
                    digest.update(block)
            report.checked += 1
            if digest.hexdigest() != expected:
                self.cache.delete(key)
                report.removed.append(f"{key[1]}/{key[2]}")
        # Files diskcache holds no record of (a crash between rename and insert) are removed.
        with contextlib.suppress(Exception):
            self.cache.check(fix=True)
        if report.removed:
            self._bump_generation()
        return report


@dataclass
class VerifyReport:
    checked: int = 0
    removed: list[str] = dataclasses.field(default_factory=list)

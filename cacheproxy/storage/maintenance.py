"""The store's maintenance: listing, purging, pruning and verifying what it holds. Blocking,
for the cache commands (which run beside a running server) or a worker thread.

Every removal bumps a version the running servers read (storage/versions.py), so what they
keep in memory goes stale at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from dataclasses import dataclass

from cacheproxy.storage.entries import FACTS_VERSION, FILE, VERSION, Entries, is_file_key
from cacheproxy.storage.versions import Versions

_COUNTERS = (VERSION, FACTS_VERSION)


class Maintenance:
    def __init__(self, entries: Entries, versions: Versions) -> None:
        self._entries = entries
        self._versions = versions

    def file_records(self) -> list[tuple[str, str, int, float]]:
        """(project, filename, size, stored_at) of every stored file."""
        records = []
        for key in self._entries.all_keys():
            if not is_file_key(key):
                continue
            # A listing is no use: it leaves the order of eviction as it was.
            stored = self._entries.stored_file(key, note=False)
            if stored is not None:
                records.append((key[1], key[2], stored.size, stored.mtime or 0.0))
        return records

    def purge_project(self, project: str) -> int:
        """Forget a project: its page, its files and what was learned about them."""
        cache = self._entries.cache
        removed = 0
        for key in self._entries.all_keys():
            if not (isinstance(key, tuple) and len(key) > 1 and key[1] == project):
                continue
            if key[0] not in _COUNTERS:
                removed += bool(cache.delete(key))
        self._entries.files_changed()
        self._versions.bump_page(project)
        self._versions.forget()
        return removed

    def prune(self, max_size: int | None, older_than: float | None, now: float) -> int:
        """Remove files stored before now - older_than, then least recently used entries
        until the cache is under max_size. The number of entries removed."""
        cache = self._entries.cache
        removed = 0
        if older_than is not None:
            for project, filename, _, stored_at in self.file_records():
                if now - stored_at > older_than:
                    removed += bool(cache.delete((FILE, project, filename)))
            self._entries.files_changed()
        if max_size is not None:
            removed += self._entries.cull(max_size)
        self._versions.bump_generation()
        return removed

    def verify_sync(self) -> VerifyReport:
        """Re-hash every stored file against the sha256 it was stored under and drop those
        that no longer match (disk faults, hand edits). Blocking: for the CLI or a thread."""
        cache = self._entries.cache
        report = VerifyReport()
        for key in self._entries.all_keys():
            if not is_file_key(key):
                continue
            handle, expected = self._entries.open_file(key)
            if handle is None:
                continue
            with handle:
                digest = hashlib.sha256()
                while block := handle.read(1024 * 1024):
                    digest.update(block)
            report.checked += 1
            if digest.hexdigest() != expected:
                cache.delete(key)
                report.removed.append(f"{key[1]}/{key[2]}")
        # Files diskcache holds no record of (a crash between rename and insert) are removed.
        with contextlib.suppress(Exception):
            cache.check(fix=True)
        self._entries.files_changed()
        if report.removed:
            self._versions.bump_generation()
        return report


@dataclass
class VerifyReport:
    checked: int = 0
    removed: list[str] = dataclasses.field(default_factory=list)

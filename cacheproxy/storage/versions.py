"""The versions of pages as every process sees them.

Two counters per project (one bumped by writes to its page and by a purge, one by the facts
learned about its files) and a store-wide generation (bumped by prune and verify) live in the
store. A process keeps what it read of them and reads again when SQLite's data_version says
another connection wrote, so a value derived from a page at one version is current while the
version is unchanged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import diskcache

from cacheproxy.storage import pagecodec
from cacheproxy.storage.maintenance import FACTS_VERSION, GENERATION, PAGE, VERSION

# How long a look at data_version holds: a hot page served at thousands of requests a second
# asks SQLite once per interval, and a purge from another process is seen this soon.
DATA_VERSION_SECONDS = 0.02


class Versions:
    cache: diskcache.Cache

    def _init_versions(self) -> None:
        # What this process knows of each project's counters: (page, facts).
        self._versions: dict[str, tuple[int, int]] = {}
        self._generation: int | None = None
        self._data_version: int | None = None
        self._looked_at = -1.0  # time.monotonic() of the last data_version read

    def _value(self, key: tuple, default=None):  # the store's own: a read without a write
        raise NotImplementedError

    def _forget_versions(self) -> None:
        self._looked_at = -1.0

    def _changed_elsewhere(self) -> bool:
        """Whether another connection (a thread here, or another process) wrote to the store
        since the last look: SQLite's data_version, read from shared memory, no disk I/O."""
        now = time.monotonic()
        if now - self._looked_at < DATA_VERSION_SECONDS:
            return False
        self._looked_at = now
        current = self.cache._con.execute("PRAGMA data_version").fetchone()[0]
        changed, self._data_version = current != self._data_version, current
        return changed

    def _read_versions(self, project: str) -> tuple[int, tuple[int, int]]:
        counters = self._value((VERSION, project), 0), self._value((FACTS_VERSION, project), 0)
        return self._value(GENERATION, 0), counters

    async def page_version(self, project: str) -> tuple[int, int, int]:
        """The version of a project's page and file facts, as every process sees it: a value
        derived from the page at one version is current while the version is unchanged."""
        generation, (page, facts) = await self._counters(project)
        return generation, page, facts

    async def stored_page_version(self, project: str) -> tuple[int, int]:
        """The version of the page alone, as stored: what is read from the store at one
        version is current while it is unchanged, whatever facts are learned meanwhile."""
        generation, (page, _) = await self._counters(project)
        return generation, page

    def _read_page(self, project: str) -> Any:
        """The stored page in its compact form (pagecodec); entries pickled before still load."""
        return pagecodec.decode(self._value((PAGE, project)))

    async def page_with_version(self, project: str) -> tuple[tuple[int, int], Any]:
        """stored_page_version() and the stored page (get_page()) in one turn of the thread
        pool, the version read first: what is read is current while it is unchanged."""
        self._forget_if_changed_elsewhere()

        def read() -> tuple[int, tuple[int, int], Any]:
            generation, counters = self._read_versions(project)
            return generation, counters, self._read_page(project)

        generation, counters, page = await asyncio.to_thread(read)
        self._generation, self._versions[project] = generation, counters
        return (generation, counters[0]), page

    def _forget_if_changed_elsewhere(self) -> None:
        if self._changed_elsewhere():
            self._versions.clear()
            self._generation = None

    async def _counters(self, project: str) -> tuple[int, tuple[int, int]]:
        self._forget_if_changed_elsewhere()
        version = self._versions.get(project)
        if version is None or self._generation is None:
            self._generation, version = await asyncio.to_thread(self._read_versions, project)
            self._versions[project] = version
        return self._generation, version

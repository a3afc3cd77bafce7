"""The versions of pages as every process sees them.

Two counters per project (one bumped by writes to its page and by a purge, one by the facts
learned about its files) and a store-wide generation (bumped by prune and verify) live in the
store, so every process sees every other's writes. Every bump also sets a token (CHANGED) anew
in the same transaction. A process keeps what it read of the counters and reads them again
when the token differs from the one it saw last: a value derived from a page at one version is
current while the version is unchanged.

The token is a random value rather than a count, so a cull that evicts it (prune --max-size)
cannot bring back a value a process saw before.
"""

from __future__ import annotations

import asyncio
import os
import time

from cacheproxy.storage.entries import CHANGED, FACTS_VERSION, GENERATION, VERSION, Entries

# How long a look at the token holds: a hot page served at thousands of requests a second
# asks the store once per interval (one SELECT by key, no write), and a purge from another
# process is seen this soon.
CHANGE_CHECK_SECONDS = 0.02
_UNSEEN = object()


class Versions:
    """What this process knows of the counters. The bumps are blocking (for the writer's
    thread, inside its transaction); the reads are async and cheap while nothing changed."""

    def __init__(self, entries: Entries) -> None:
        self._entries = entries
        self._known: dict[str, tuple[int, int]] = {}  # project -> (page, facts)
        self._generation: int | None = None
        self._token: object = _UNSEEN
        self._looked_at = -1.0  # time.monotonic() of the last look at the token
        self._epoch = 0  # how many times all was forgotten: a read begun before is not kept

    # -- bumps (blocking) ------------------------------------------------------------------

    def bump_page(self, project: str) -> int:
        return self._bump((VERSION, project))

    def bump_facts(self, project: str) -> int:
        return self._bump((FACTS_VERSION, project))

    def bump_generation(self) -> int:
        generation = self._bump(GENERATION)
        self.forget()
        return generation

    def _bump(self, key: object) -> int:
        cache = self._entries.cache
        with cache.transact(retry=True):
            value = cache.incr(key, default=0, retry=True)
            cache.set(CHANGED, os.urandom(8), retry=True)
        return value

    # -- what this process knows -----------------------------------------------------------

    def read(self, project: str) -> tuple[int, tuple[int, int]]:
        """(generation, (page, facts)) as stored now. Blocking: for a worker thread."""
        value = self._entries.value
        counters = value((VERSION, project), 0), value((FACTS_VERSION, project), 0)
        return value(GENERATION, 0), counters

    @property
    def epoch(self) -> int:
        """Take it before a read() and give it to remember() after."""
        return self._epoch

    def remember(
        self, project: str, generation: int, counters: tuple[int, int], epoch: int
    ) -> None:
        """Keep what read() said, unless everything was forgotten while it ran."""
        if epoch == self._epoch:
            self._generation, self._known[project] = generation, counters

    def forget(self, project: str | None = None) -> None:
        """Read one project's counters again (after this process wrote them), or, without a
        project, look at the token at the next read (after a purge, prune or verify)."""
        if project is None:
            self._looked_at = -1.0
        else:
            self._known.pop(project, None)

    def look(self) -> None:
        """Forget every counter read if a version was bumped since the last look, by another
        thread or process. At most every CHANGE_CHECK_SECONDS; on the event loop, as the
        read is one SELECT by key on a WAL database (readers do not wait for writers)."""
        now = time.monotonic()
        if now - self._looked_at >= CHANGE_CHECK_SECONDS:
            self._look(now)

    def _look(self, now: float) -> None:
        self._looked_at = now
        token = self._entries.peek(CHANGED)
        if token != self._token:
            self._token = token
            self._known.clear()
            self._generation = None
            self._epoch += 1

    async def counters(self, project: str) -> tuple[int, tuple[int, int]]:
        self.look()
        known = self._known.get(project)
        if known is not None and self._generation is not None:
            return self._generation, known
        return await self._read_counters(project)

    async def _read_counters(self, project: str) -> tuple[int, tuple[int, int]]:
        epoch = self._epoch
        generation, counters = await asyncio.to_thread(self.read, project)
        self.remember(project, generation, counters, epoch)
        return generation, counters

    async def page_version(self, project: str) -> tuple[int, int, int]:
        """The version of a project's page and file facts, as every process sees it: a value
        derived from the page at one version is current while the version is unchanged."""
        # counters() written out: asked at every hot page request.
        now = time.monotonic()
        if now - self._looked_at >= CHANGE_CHECK_SECONDS:
            self._look(now)
        known, generation = self._known.get(project), self._generation
        if known is None or generation is None:
            generation, known = await self._read_counters(project)
        return generation, known[0], known[1]

    async def stored_page_version(self, project: str) -> tuple[int, int]:
        """The version of the page alone, as stored: what is read from the store at one
        version is current while it is unchanged, whatever facts are learned meanwhile."""
        generation, (page, _) = await self.counters(project)
        return generation, page

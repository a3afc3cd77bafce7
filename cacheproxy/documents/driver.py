"""The one driver that moves a cached document through its states (`documents.states`),
doing the I/O each state asks for through a small adapter per kind of document.

Project pages (`pages.service`) and JSON API documents (`jsonapi.service`) both refresh
through `DocumentCache.refresh(kind, key, entry)`: one refresh per document at a time, shared
by every request that finds it due; the upstream left alone for a moment after it could not
be reached; a store that cannot take a document (a full disk) serving it uncached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from cacheproxy.documents import states
from cacheproxy.documents.singleflight import SingleFlight
from cacheproxy.documents.states import (
    Freshness,
    Missing,
    NeedsFetch,
    NeedsParse,
    NeedsRevalidation,
    Serve,
    State,
    Store,
    decide,
    failed,
)
from cacheproxy.errors import UpstreamError
from cacheproxy.storage.disk import STORE_WRITE_ERRORS, DiskSpace, is_no_space
from cacheproxy.upstream import PageResponse

log = logging.getLogger(__name__)


class DocumentKind(Protocol):
    """How one kind of document is fetched, parsed and kept. Keys are the kind's own."""

    # What it is called in log lines ("page", "JSON API document"); also keeps the refreshes
    # of different kinds apart.
    name: str

    def make(
        self, status: int, body: Any, fetched_at: float, etag: str | None, modified: str | None
    ) -> Any:
        """A stored entry (CachedPage, CachedDocument)."""

    def project(self, key: Any) -> str:
        """The project the document belongs to, for log lines."""

    def describe(self, key: Any) -> str:
        """The document as an error about an upstream answer names it."""

    async def peer(self, key: Any) -> Any:
        """A copy another node stored, of whatever age, or None."""

    async def fetch(self, key: Any, headers: dict[str, str]) -> PageResponse:
        """Ask the upstream, with the conditional headers given."""

    async def parse(self, key: Any, answer: PageResponse) -> tuple[Any, Any]:
        """The body in the form it is kept in, and anything made on the way (or None).
        Off the event loop."""

    async def finish(self, extra: Any) -> Any:
        """What is made from the parse's extra while the entry is stored."""

    async def keep(self, key: Any, entry: Any) -> None:
        """Write the entry; raises what the store raises (STORE_WRITE_ERRORS)."""

    async def refreshed(self, key: Any, previous: Any, entry: Any) -> None:
        """The upstream answered and the entry was stored (or not): tell whoever cares."""


class DocumentCache:
    """The freshness decision and the refresh driver of one index's documents of a kind."""

    def __init__(
        self, freshness: Freshness, disk: DiskSpace, clock: Callable[[], float] = time.time
    ) -> None:
        self.freshness = freshness
        self.disk = disk
        self.clock = clock
        self._flights: SingleFlight[Serve] = SingleFlight()
        # When the upstream last could not be reached at all (connection refused, timeout).
        self._unreachable_at: float | None = None

    def decide(self, entry: Any) -> State:
        return decide(entry, self.clock(), self.freshness)

    def is_fresh(self, entry: Any) -> bool:
        """Whether the entry (or the head kept beside a rendered copy) is served as it is:
        decide()'s Serve, without making a state (asked at every hot page request)."""
        freshness = self.freshness
        return entry is not None and (
            freshness.offline
            or states.is_fresh(entry, self.clock(), freshness.page_ttl, freshness.negative_ttl)
        )

    def max_age(self, entry: Any) -> int:
        """How long a client may reuse the document: what is left of our own freshness."""
        freshness = self.freshness
        return states.page_max_age(entry, self.clock(), freshness.page_ttl, freshness.negative_ttl)

    def upstream_unreachable(self) -> bool:
        return states.upstream_resting(self._unreachable_at, self.clock())

    async def refresh(self, kind: DocumentKind, key: Hashable, entry: Any) -> Serve | None:
        """The stored entry as it may be served, refreshed if it is due; None when offline
        with nothing stored. Raises UpstreamError (UpstreamRefused) with nothing to serve."""
        state = self.decide(entry)
        if isinstance(state, Missing):
            return None
        if isinstance(state, Serve):
            return state
        return await self._flights.run((kind.name, key), lambda: self._drive(kind, key, state))

    async def _drive(self, kind: DocumentKind, key: Any, state: State) -> Serve:
        while not isinstance(state, Serve):
            if isinstance(state, NeedsFetch) and not state.peer_asked:
                state = state.peer_answered(await kind.peer(key), self.decide)
            elif isinstance(state, Store) and not state.from_upstream:
                state = state.stored(await self._keep(kind, key, state.entry))
            else:
                asking = state
                assert isinstance(asking, (NeedsFetch, NeedsRevalidation, NeedsParse, Store))
                try:
                    state = await self._upstream_step(kind, key, asking)
                except UpstreamError as exc:
                    state = self._failed(kind, key, asking.previous, exc)
        return state

    async def _upstream_step(self, kind: DocumentKind, key: Any, state: State) -> State:
        if isinstance(state, NeedsFetch | NeedsRevalidation):
            rested = state.rested(self.upstream_unreachable())
            if rested is not None:
                return rested
            answer = await kind.fetch(key, state.headers)
            return state.answered(answer, kind.describe(key), self.clock(), kind.make)
        if isinstance(state, NeedsParse):
            body, extra = await kind.parse(key, state.answer)
            return state.parsed(body, extra, self.clock(), kind.make)
        assert isinstance(state, Store)
        if state.extra is None:
            stored, extra = await self._keep(kind, key, state.entry), None
        else:
            stored, extra = await asyncio.gather(
                self._keep(kind, key, state.entry), kind.finish(state.extra)
            )
        await kind.refreshed(key, state.previous, state.entry)
        return state.stored(stored, extra)

    def _failed(self, kind: DocumentKind, key: Any, previous: Any, exc: UpstreamError) -> Serve:
        if exc.unreachable:
            self._unreachable_at = self.clock()
        served = failed(previous, exc)  # raises when there is nothing to serve
        log.warning("serving stale %s for %s: %s", kind.name, kind.project(key), exc)
        return served

    async def _keep(self, kind: DocumentKind, key: Any, entry: Any) -> bool:
        """Store a document just fetched; False when it could not be. It was fetched fine, so
        a store that cannot take it (a full disk above all) must not fail the request: it is
        served uncached, as files are, and cached again once there is room."""
        if self.disk.full and not await self.disk.has_room(0):
            return False  # not even tried: a full disk must not cost an exception per page
        try:
            await kind.keep(key, entry)
        except STORE_WRITE_ERRORS as exc:
            if is_no_space(exc):
                self.disk.note_full()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            project = kind.project(key)
            log.warning("%s of %s is served without being cached: %s", kind.name, project, reason)
            return False
        return True

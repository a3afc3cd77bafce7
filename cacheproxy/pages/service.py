"""Project pages: the stored pages refreshed through the one document driver, rendered here.

`PageService.answer` is the whole page path: a hot rendered page when it is fresh, otherwise
the stored page (or the upstream's) rendered for the content type asked for. Concurrent
requests share one refresh per project (`documents.driver`) and one render per content type.
`StoredPages` is the page kind of cached document: how a page is fetched, parsed, stored and
kept in memory.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cacheproxy.config import Config
from cacheproxy.documents.driver import DocumentCache
from cacheproxy.documents.memo import HotPage, VersionedCache, memory_caches
from cacheproxy.documents.singleflight import SingleFlight
from cacheproxy.documents.states import Freshness
from cacheproxy.errors import BadUpstreamPage, PageError
from cacheproxy.ops.metrics import Metrics
from cacheproxy.pages.rules import Rules
from cacheproxy.pages.shared import SharedPages
from cacheproxy.pages.takedowns import removed_files
from cacheproxy.pages.visibility import PageVisibility, Refused
from cacheproxy.protocol.compact import CompactPage
from cacheproxy.protocol.negotiation import JSON_V1
from cacheproxy.protocol.page import FileSource, describe_dropped, find_source
from cacheproxy.protocol.parse import FileHosts, parse_html, parse_json_served
from cacheproxy.protocol.render import Rendered, with_variants
from cacheproxy.storage.disk import STORE_WRITE_ERRORS, DiskSpace
from cacheproxy.storage.port import StorePort
from cacheproxy.storage.records import CachedPage, head_of
from cacheproxy.upstream import PageResponse, Upstream

log = logging.getLogger(__name__)

PAGE_WORK_AT_ONCE = 2  # page parses and renders running at once (the machine's cores)


@dataclass(frozen=True)
class PageResult:
    """A page as found: stored, or refreshed on the way."""

    entry: CachedPage
    outcome: str  # hit, miss, revalidated, stale, uncached, shared
    warning: str | None = None
    # A page just parsed: its JSON render while nothing is known of its files (made by the
    # parse, its ETag and gzip while the page was stored), so the first render need not go
    # through thousands of entries again.
    fresh_render: Rendered | None = None


@dataclass(frozen=True)
class PageAnswer:
    """A page for a client: rendered, or None for a project that does not exist (or is not
    cached while offline)."""

    outcome: str  # hit, miss, revalidated, stale, uncached, offline
    page: HotPage | None
    max_age: int
    warning: str | None = None
    refused: str | None = None  # why the rules refuse the whole project (403)


def parse_upstream_page(
    project: str, response: PageResponse, hosts: FileHosts
) -> tuple[CompactPage, bytes | None]:
    """An upstream page's body in the compact form it is kept in (dropped entries still told),
    and for a JSON page its JSON as served while nothing is known of its files. Pure CPU work:
    StoredPages runs it in a worker thread."""
    try:
        if response.content_type == JSON_V1 or response.content_type.endswith("+json"):
            return parse_json_served(response.body, response.url, hosts)
        if "html" in response.content_type:
            return parse_html(response.body, response.url, project, hosts), None
    except PageError as exc:
        raise BadUpstreamPage(str(exc)) from None
    raise BadUpstreamPage(f"upstream sent a page of type {response.content_type!r}")


class StoredPages:
    """The pages of one index as cached documents (a `documents.driver.DocumentKind`): fetched
    with conditional headers, parsed off the event loop, stored and kept in memory per store
    version, refreshed through one driver."""

    name = "page"

    def __init__(
        self,
        config: Config,
        store: StorePort,
        upstream: Upstream,
        disk: DiskSpace,
        metrics: Metrics,
        clock: Callable[[], float],
        shared: SharedPages | None,
        page_work: asyncio.Semaphore,
        parsed: VersionedCache[str, CachedPage],
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.metrics = metrics
        self.clock = clock
        self.shared = shared
        self.cache = DocumentCache(Freshness.of(config), disk, clock)
        self._page_work = page_work
        self._parsed = parsed
        self._loads: SingleFlight[CachedPage | None] = SingleFlight()
        self._file_hosts = FileHosts(config.file_hosts, config.public_upstream)

    async def get(self, project: str) -> PageResult | None:
        """The project's stored page, refreshed if it is due; None when offline with nothing
        cached."""
        served = await self.cache.refresh(self, project, await self.stored_page(project))
        if served is None:
            return None
        return PageResult(served.entry, served.outcome, served.warning, served.extra)

    async def current_page(self, project: str) -> CachedPage | None:
        result = await self.get(project)
        return None if result is None else result.entry

    async def stored_page(self, project: str) -> CachedPage | None:
        """The stored page as it is, read once per store version."""
        # The version is read first: a write that lands while the store is read makes the
        # copy kept here look old at once, never current.
        # The page alone: facts learned about its files (each .metadata read, each download)
        # leave the copy read from the store current; only the rendered forms go stale.
        if project not in self._parsed:
            # Nothing held: the version and the page in one turn of the thread pool (a page
            # not stored yet is asked for first, as a cold resolution asks for dozens).
            return await self._loads.run(("load", project), lambda: self._load(project))
        version = await self.store.stored_page_version(project)
        entry = self._parsed.get(project, version)
        if entry is None:
            # One read per version, whatever the number of requests: one copy in memory.
            entry = await self._loads.run(
                ("load", project, version), lambda: self._load(project, version)
            )
        return entry

    async def _load(
        self, project: str, version: tuple[int, int] | None = None
    ) -> CachedPage | None:
        """The stored page, kept at its version; read together with it when none was read."""
        if version is None:
            version, entry = await self.store.page_with_version(project)
        else:
            entry = await self.store.get_page(project)
        if entry is not None:
            self._parsed.put(project, version, entry)
        return entry

    # The page kind of document, as the driver uses it.

    def make(
        self, status: int, body: Any, fetched_at: float, etag: str | None, modified: str | None
    ) -> CachedPage:
        return CachedPage(status, body, fetched_at, etag, modified)

    def project(self, key: str) -> str:
        return key

    def describe(self, key: str) -> str:
        return key

    async def peer(self, project: str) -> CachedPage | None:
        return None if self.shared is None else await self.shared.snapshot(project)

    async def fetch(self, project: str, headers: dict[str, str]) -> PageResponse:
        return await self.upstream.fetch_page(project, headers)

    async def parse(self, project: str, answer: PageResponse) -> tuple[Any, bytes | None]:
        # A large page (thousands of files) takes a tenth of a second to parse: not on the
        # event loop, where it would stall every other client.
        async with self._page_work:
            page, fresh_json = await asyncio.to_thread(
                parse_upstream_page, project, answer, self._file_hosts
            )
        if page.dropped:
            log.warning("%s: %s", project, describe_dropped(page.dropped))
            self.metrics.page_entries_dropped.inc(len(page.dropped))
        return page, fresh_json

    async def finish(self, fresh_json: bytes) -> Rendered:
        """The first render's ETag and gzip, made while the page is stored (C code that lets
        the GIL go, nothing expanded: not bounded with the parses): a client waits for both."""
        return await asyncio.to_thread(with_variants, fresh_json)

    async def keep(self, project: str, entry: CachedPage) -> None:
        await self.store.put_page(project, entry)
        self._parsed.put(project, await self.store.stored_page_version(project), entry)

    async def refreshed(self, project: str, old: CachedPage | None, new: CachedPage) -> None:
        if old is not None and new.page is not old.page:
            await self._forget_taken_down(project, old, new)
        if self.shared is not None:
            await self.shared.offer(project, new)

    async def _forget_taken_down(self, project: str, old: CachedPage, new: CachedPage) -> None:
        removed = removed_files(old, new)
        if not removed:
            return
        shown = ", ".join(removed[:3])
        log.warning("%s: %d files gone from the upstream's page: %s", project, len(removed), shown)
        try:
            await asyncio.to_thread(self.store.forget_taken_down, project, removed, self.clock())
        except STORE_WRITE_ERRORS as exc:
            log.warning("files taken down upstream are still in the cache: %s", exc)


class PageService:
    """One index's project pages as clients are served them."""

    def __init__(
        self,
        config: Config,
        store: StorePort,
        upstream: Upstream,
        disk: DiskSpace,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        shared: SharedPages | None = None,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.metrics = metrics
        self.clock = clock
        self._renders: SingleFlight[PageAnswer] = SingleFlight()
        parsed, self._rendered = memory_caches(config.memory_budget)
        # Parsing and rendering expand a page into dictionaries for a moment (numpy's: several
        # MB); a bound on how many run at once bounds that memory whatever the number of
        # clients waiting.
        self._page_work = asyncio.Semaphore(PAGE_WORK_AT_ONCE)
        self.stored = StoredPages(
            config, store, upstream, disk, metrics, clock, shared, self._page_work, parsed
        )
        self._parsed = parsed
        self.rules = Rules.from_settings(config)
        self.visibility = PageVisibility(self.rules, store, self.stored, metrics, clock)

    def memory_held(self) -> dict[str, int]:
        """Bytes held by this index's memory caches, by cache."""
        return {"parsed": self._parsed.weight, "rendered": self._rendered.weight}

    def upstream_unreachable(self) -> bool:
        return self.stored.cache.upstream_unreachable()

    async def answer(
        self, project: str, content_type: str, *, upstream_urls: bool = False
    ) -> PageAnswer:
        """The project's page rendered as content_type; upstream_urls: with each file's
        upstream URL instead of the proxy's (the transparent face: hot copies of its own).
        Raises UpstreamError (and UpstreamRefused) when there is nothing to serve."""
        # The hot path (a fresh rendered copy) is written out: every call costs at thousands
        # of requests a second.
        if self.rules.active and (refused := self.visibility.project_refusal(project)):
            self.metrics.policy_hidden.labels("project", "project").inc()
            return PageAnswer("refused", None, 0, refused=refused)
        # Where a rendered page is kept: the index face's as (project, content type), the
        # transparent face's apart from it.
        key = (project, content_type, "upstream") if upstream_urls else (project, content_type)
        # The version only tells whether a hot copy is current: not read when none is held.
        if key in self._rendered:
            hot = self._rendered.get(key, await self.store.page_version(project))
            # A hot copy is good until the clock makes a file it leaves off visible.
            if (
                hot is not None
                and self.stored.cache.is_fresh(hot.head)
                and self.clock() < hot.changes_at
            ):
                return PageAnswer("hit", hot, self._bounded_max_age(hot.head, hot.changes_at))
        return await self._renders.run(
            key, lambda: self._render(key, project, content_type, upstream_urls)
        )

    async def _render(
        self, key: tuple[str, ...], project: str, content_type: str, upstream_urls: bool
    ) -> PageAnswer:
        result = await self.get(project)
        if result is None:
            return PageAnswer("offline", None, 0)
        if result.entry.page is None:
            return PageAnswer(result.outcome, None, self.stored.cache.max_age(result.entry))
        # The version is read before the facts, so facts learned meanwhile make it out of date.
        version = await self.store.page_version(project)
        stored, facts = result.entry.page, await self.store.file_facts(project)
        if (
            result.fresh_render is not None
            and not upstream_urls
            and not facts
            and self.visibility.renders_lines(stored, content_type)
        ):
            hidden: list[str] = []
            changes_at, rendered = math.inf, result.fresh_render
        else:
            async with self._page_work:
                hidden, changes_at, rendered = await asyncio.to_thread(
                    self.visibility.render, stored, facts, content_type, upstream_urls
                )
        for rule in hidden:
            self.metrics.policy_hidden.labels(rule, "page").inc()
        hot = HotPage(head_of(result.entry), rendered, changes_at)
        max_age = self._bounded_max_age(result.entry, changes_at)
        # A stale or uncached page is not kept: the next request tries the upstream or the
        # store again rather than being served this copy as a hit.
        if not result.warning and result.outcome != "uncached":
            self._rendered.put(key, version, hot)
        return PageAnswer(result.outcome, hot, max_age, result.warning)

    def _bounded_max_age(self, entry: CachedPage, changes_at: float) -> int:
        """What is left of the TTL, and no longer than until a hidden file becomes visible."""
        max_age = self.stored.cache.max_age(entry)
        if changes_at == math.inf:
            return max_age
        return min(max_age, max(0, math.ceil(changes_at - self.clock())))

    async def get(self, project: str) -> PageResult | None:
        """The project's stored page, refreshed if it is due; None when offline with nothing
        cached."""
        return await self.stored.get(project)

    async def find_file(self, project: str, filename: str) -> FileSource | None:
        """Where a file of the project comes from; a fresh page is asked for only when the
        stored one does not list it (files are immutable, pages only grow)."""
        entry = await self.stored.stored_page(project)
        if entry is not None and entry.page is not None:
            source = find_source(entry.page, filename)
            if source is not None:
                return source
        result = await self.get(project)
        if result is None or result.entry.page is None:
            return None
        return find_source(result.entry.page, filename)

    # What the rules and takedowns let a client have (see PageVisibility).

    async def refusal(self, project: str, filename: str) -> Refused | None:
        return await self.visibility.refusal(project, filename)

    async def taken_down(self, project: str, filename: str) -> Refused | None:
        return await self.visibility.taken_down(project, filename)

    async def visible_files(self, project: str) -> Mapping[str, dict[str, Any]] | None:
        return await self.visibility.visible_files(project)

"""Project pages: one decision (serve, revalidate, fetch), one fetch at a time, rendered here.

`PageService.answer` is the whole page path: a hot rendered page when it is fresh, otherwise
the stored page (or the upstream's) rendered for the content type asked for. Concurrent
requests share one refresh per project and one render per content type.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable

from cacheproxy.config import Config
from cacheproxy.documents import policy
from cacheproxy.documents.memo import HotPage, memory_caches, visible_pages
from cacheproxy.documents.policy import PageAction
from cacheproxy.documents.singleflight import SingleFlight
from cacheproxy.errors import UpstreamError, UpstreamRefused
from cacheproxy.pages.page_rules import PageRules
from cacheproxy.pages.parse import parse_upstream_page
from cacheproxy.pages.results import PageAnswer, PageResult
from cacheproxy.pages.rules import Rules
from cacheproxy.pages.shared import SharedPages
from cacheproxy.protocol.filehosts import FileHosts
from cacheproxy.protocol.page import (
    FileSource,
    describe_dropped,
    find_source,
)
from cacheproxy.protocol.render import Rendered, with_variants
from cacheproxy.storage.disk import STORE_WRITE_ERRORS, DiskSpace, is_no_space
from cacheproxy.storage.local import Store
from cacheproxy.storage.records import CachedPage, head_of
from cacheproxy.upstream import Upstream

log = logging.getLogger(__name__)

PAGE_WORK_AT_ONCE = 2  # page parses and renders running at once (the machine's cores)


class PageService(PageRules):
    def __init__(
        self,
        config: Config,
        store: Store,
        upstream: Upstream,
        disk: DiskSpace,
        clock: Callable[[], float] = time.time,
        shared: SharedPages | None = None,
    ) -> None:
        self.config = config
        self.shared = shared
        self.store = store
        self.upstream = upstream
        self.disk = disk
        self.clock = clock
        self._flights: SingleFlight[object] = SingleFlight()
        self._parsed, self._rendered = memory_caches(config.memory_budget)
        # Parsing and rendering expand a page into dictionaries for a moment (numpy's: several
        # MB); a bound on how many run at once bounds that memory whatever the number of
        # clients waiting.
        self._page_work = asyncio.Semaphore(PAGE_WORK_AT_ONCE)
        self.rules = Rules.from_settings(config)
        self._visible = visible_pages()
        self._file_hosts = FileHosts(config.file_hosts, config.public_upstream)
        # When the upstream last could not be reached at all (connection refused, timeout).
        self._unreachable_at: float | None = None

    def memory_held(self) -> dict[str, int]:
        """Bytes held by this index's memory caches, by cache."""
        return {"parsed": self._parsed.weight, "rendered": self._rendered.weight}

    def upstream_unreachable(self) -> bool:
        return policy.upstream_resting(self._unreachable_at, self.clock())

    def _action(self, entry: CachedPage | None) -> PageAction:
        """The one freshness decision, for hot rendered pages and stored ones alike."""
        return policy.page_action(
            entry,
            self.clock(),
            page_ttl=self.config.page_ttl,
            negative_ttl=self.config.negative_ttl,
            offline=self.config.offline,
        )

    def _max_age(self, entry: CachedPage) -> int:
        return policy.page_max_age(
            entry, self.clock(), self.config.page_ttl, self.config.negative_ttl
        )

    async def answer(self, project: str, content_type: str) -> PageAnswer:
        """The project's page rendered as content_type. Raises UpstreamError (and
        UpstreamRefused) when there is nothing to serve."""
        if self.rules.active and (refused := self.rules.refusal(project)):
            self.upstream.metrics.policy_hidden.labels("project", "project").inc()
            return PageAnswer("refused", None, 0, refused=refused)
        key = (project, content_type)
        # The version only tells whether a hot copy is current: not read when none is held.
        hot = (
            self._rendered.get(key, await self.store.page_version(project))
            if key in self._rendered
            else None
        )
        # A hot copy is good until the clock makes a file it leaves off visible.
        if (
            hot is not None
            and self._action(hot.head) is PageAction.SERVE
            and self.clock() < hot.changes_at
        ):
            return PageAnswer("hit", hot, self._bounded_max_age(hot.head, hot.changes_at))
        answer = await self._flights.run(
            ("render", project, content_type), lambda: self._render(project, content_type)
        )
        assert isinstance(answer, PageAnswer)
        return answer

    async def _render(self, project: str, content_type: str) -> PageAnswer:
        result = await self.get(project)
        if result is None:
            return PageAnswer("offline", None, 0)
        if result.entry.page is None:
            return PageAnswer(result.outcome, None, self._max_age(result.entry))
        # The version is read before the facts, so facts learned meanwhile make it out of date.
        version = await self.store.page_version(project)
        stored, facts = result.entry.page, await self.store.file_facts(project)
        if (
            result.fresh_render is not None
            and not facts
            and self._renders_lines(stored, content_type)
        ):
            hidden, changes_at, rendered = [], math.inf, result.fresh_render
        else:
            async with self._page_work:
                hidden, changes_at, rendered = await asyncio.to_thread(
                    self._render_page, stored, facts, content_type
                )
        for rule in hidden:
            self.upstream.metrics.policy_hidden.labels(rule, "page").inc()
        hot = HotPage(head_of(result.entry), rendered, changes_at)
        max_age = self._bounded_max_age(result.entry, changes_at)
        # A stale or uncached page is not kept: the next request tries the upstream or the
        # store again rather than being served this copy as a hit.
        if not result.warning and result.outcome != "uncached":
            self._rendered.put((project, content_type), version, hot)
        return PageAnswer(result.outcome, hot, max_age, result.warning)

    def _bounded_max_age(self, entry: CachedPage, changes_at: float) -> int:
        """What is left of the TTL, and no longer than until a hidden file becomes visible."""
        max_age = self._max_age(entry)
        if changes_at == math.inf:
            return max_age
        return min(max_age, max(0, math.ceil(changes_at - self.clock())))

    async def get(self, project: str) -> PageResult | None:
        """The project's stored page, refreshed if it is due; None when offline with nothing
        cached."""
        entry = await self._stored_page(project)
        action = self._action(entry)
        if action is PageAction.MISSING:
            return None
        if action is PageAction.SERVE:
            assert entry is not None
            return PageResult(entry, "hit")
        result = await self._flights.run(
            ("refresh", project), lambda: self._refresh(project, entry)
        )
        assert isinstance(result, PageResult)
        return result

    async def find_file(self, project: str, filename: str) -> FileSource | None:
        """Where a file of the project comes from; a fresh page is asked for only when the
        stored one does not list it (files are immutable, pages only grow)."""
        entry = await self._stored_page(project)
        if entry is not None and entry.page is not None:
            source = find_source(entry.page, filename)
            if source is not None:
                return source
        result = await self.get(project)
        if result is None or result.entry.page is None:
            return None
        return find_source(result.entry.page, filename)

    async def _stored_page(self, project: str) -> CachedPage | None:
        # The version is read first: a write that lands while the store is read makes the
        # copy kept here look old at once, never current.
        # The page alone: facts learned about its files (each .metadata read, each download)
        # leave the copy read from the store current; only the rendered forms go stale.
        if project not in self._parsed:
            # Nothing held: the version and the page in one turn of the thread pool (a page
            # not stored yet is asked for first, as a cold resolution asks for dozens).
            return await self._flights.run(("load", project), lambda: self._load_page(project))
        version = await self.store.stored_page_version(project)
        entry = self._parsed.get(project, version)
        if entry is None:
            # One read per version, whatever the number of requests: one copy in memory.
            entry = await self._flights.run(
                ("load", project, version), lambda: self._load_page(project, version)
            )
        return entry

    async def _load_page(
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

    async def _store_page(self, project: str, entry: CachedPage) -> bool:
        """Store a page just fetched; False when it could not be. The page was fetched fine,
        so a store that cannot take it (a full disk above all) must not fail the request: it
        is served uncached, as files are, and cached again once there is room."""
        if self.disk.full and not await self.disk.has_room(0):
            return False  # not even tried: a full disk must not cost an exception per page
        try:
            await self.store.put_page(project, entry)
        except STORE_WRITE_ERRORS as exc:
            if is_no_space(exc):
                self.disk.note_full()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            log.warning("page of %s is served without being cached: %s", project, reason)
            return False
        self._parsed.put(project, await self.store.stored_page_version(project), entry)
        return True

    async def _refresh(self, project: str, entry: CachedPage | None) -> PageResult:
        if entry is None and self.shared is not None:
            # Another node's copy: served if fresh, else revalidated (or served stale) below.
            entry = await self.shared.snapshot(project)
            if entry is not None and self._action(entry) is PageAction.SERVE:
                stored = await self._store_page(project, entry)
                return PageResult(entry, "shared" if stored else "uncached")
        if policy.may_serve_stale(entry) and self.upstream_unreachable():
            assert entry is not None
            return PageResult(entry, "stale", warning="upstream unreachable")
        try:
            result = await self._fetch(project, entry)
            if self.shared is not None:
                await self.shared.offer(project, result.entry)
            return result
        except UpstreamRefused:
            raise  # passed on so the user sees why; never cached, credentials may be fixed
        except UpstreamError as exc:
            if exc.unreachable:
                self._unreachable_at = self.clock()
            if not policy.may_serve_stale(entry):
                raise
            assert entry is not None
            log.warning("serving stale page for %s: %s", project, exc)
            return PageResult(entry, "stale", warning=str(exc))

    async def _fetch(self, project: str, entry: CachedPage | None) -> PageResult:
        response = await self.upstream.fetch_page(project, policy.revalidation_headers(entry))
        if response.status == 304 and entry is not None and entry.status == 200:
            # A copy: the one remembered in memory stays as stored if the write fails.
            confirmed = dataclasses.replace(entry, fetched_at=self.clock())
            stored = await self._store_page(project, confirmed)
            return PageResult(confirmed, "revalidated" if stored else "uncached")
        policy.check_page_status(response.status, project)
        page = fresh_json = None
        if response.status == 200:
            # A large page (thousands of files) takes a tenth of a second to parse: not on
            # the event loop, where it would stall every other client.
            async with self._page_work:
                page, fresh_json = await asyncio.to_thread(
                    parse_upstream_page, project, response, self._file_hosts
                )
            if page.dropped:
                log.warning("%s: %s", project, describe_dropped(page.dropped))
                self.upstream.metrics.page_entries_dropped.inc(len(page.dropped))
        fresh = CachedPage(
            status=200 if page is not None else 404,
            page=page,
            fetched_at=self.clock(),
            etag=response.etag,
            last_modified=response.last_modified,
        )
        stored, fresh_render = await self._store_beside_render(project, fresh, fresh_json)
        await self._forget_taken_down(project, entry, fresh)
        return PageResult(fresh, "miss" if stored else "uncached", fresh_render=fresh_render)

    async def _store_beside_render(
        self, project: str, fresh: CachedPage, fresh_json: bytes | None
    ) -> tuple[bool, Rendered | None]:
        """Store a page just fetched while its first render's ETag and gzip are made (C code
        that lets the GIL go, nothing expanded: not bounded with the parses): a client waits
        for both."""
        if fresh_json is None:
            return await self._store_page(project, fresh), None
        rendering = asyncio.to_thread(with_variants, fresh_json)
        return await asyncio.gather(self._store_page(project, fresh), rendering)

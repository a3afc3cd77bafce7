"""Project pages: serve from the store, revalidate with the upstream, or fetch anew."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cacheproxy.cache import policy
from cacheproxy.cache.parsed import ParsedPages
from cacheproxy.cache.policy import CachedPage, PageAction
from cacheproxy.cache.singleflight import SingleFlight
from cacheproxy.cache.upstream import Upstream, UpstreamError
from cacheproxy.config import Config
from cacheproxy.simple.filehosts import FileHosts
from cacheproxy.simple.negotiation import JSON_V1
from cacheproxy.simple.page import (
    FileSource,
    PageError,
    ProjectPage,
    describe_dropped,
    find_source,
    parse_html_page,
    parse_json_page,
)
from cacheproxy.store.local import Store

log = logging.getLogger(__name__)


class UpstreamRefused(Exception):
    """The upstream answered with a status the client should see (401, 403)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status


@dataclass(frozen=True)
class PageResult:
    entry: CachedPage
    outcome: str  # hit, miss, revalidated, stale
    warning: str | None = None


class PageService:
    def __init__(
        self,
        config: Config,
        store: Store,
        upstream: Upstream,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.upstream = upstream
        self.clock = clock
        self._flights: SingleFlight[PageResult] = SingleFlight()
        self._parsed = ParsedPages()
        # When the upstream last could not be reached at all (connection refused, timeout).
        self._unreachable_at: float | None = None

    def upstream_unreachable(self) -> bool:
        return policy.upstream_resting(self._unreachable_at, self.clock())

    async def get(self, project: str) -> PageResult | None:
        """The project's page, or None when offline with nothing cached."""
        entry = await self._stored_page(project)
        action = policy.page_action(
            entry,
            self.clock(),
            page_ttl=self.config.page_ttl,
            negative_ttl=self.config.negative_ttl,
            offline=self.config.offline,
        )
        if action is PageAction.MISSING:
            return None
        if action is PageAction.SERVE:
            assert entry is not None
            return PageResult(entry, "hit")
        return await self._flights.run(project, lambda: self._refresh(project, entry))

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
        version = self.store.page_version(project)
        entry = self._parsed.get(project, version)
        if entry is None:
            entry = await self.store.get_page(project)
            if entry is not None:
                self._parsed.put(project, version, entry)
        return entry

    async def _store_page(self, project: str, entry: CachedPage) -> None:
        await self.store.put_page(project, entry)
        self._parsed.put(project, self.store.page_version(project), entry)

    async def _refresh(self, project: str, entry: CachedPage | None) -> PageResult:
        now = self.clock()
        if policy.may_serve_stale(entry) and policy.upstream_resting(self._unreachable_at, now):
            assert entry is not None
            return PageResult(entry, "stale", warning="upstream unreachable")
        try:
            response = await self.upstream.fetch_page(project, policy.revalidation_headers(entry))
            if response.status == 304 and entry is not None and entry.status == 200:
                entry.fetched_at = self.clock()
                await self._store_page(project, entry)
                return PageResult(entry, "revalidated")
            if response.status in (401, 403):
                raise UpstreamRefused(response.status)
            if not policy.is_cacheable_page_status(response.status):
                raise UpstreamError(f"upstream answered {response.status} for {project}")
            page = None
            if response.status == 200:
                # A large page (thousands of files) takes a tenth of a second to parse: not
                # on the event loop, where it would stall every other client.
                hosts = FileHosts(self.config.file_hosts, self.config.public_upstream)
                page = await asyncio.to_thread(self._parse, project, response, hosts)
                if page.dropped:
                    log.warning("%s: %s", project, describe_dropped(page.dropped))
                    self.upstream.metrics.page_entries_dropped.inc(len(page.dropped))
        except (UpstreamError, PageError) as exc:
            if isinstance(exc, UpstreamError) and exc.unreachable:
                self._unreachable_at = self.clock()
            if policy.may_serve_stale(entry):
                assert entry is not None
                log.warning("serving stale page for %s: %s", project, exc)
                return PageResult(entry, "stale", warning=str(exc))
            if isinstance(exc, PageError):
                raise UpstreamError(str(exc)) from None
            raise
        fresh = CachedPage(
            status=200 if page is not None else 404,
            page=page,
            fetched_at=self.clock(),
            etag=response.etag,
            last_modified=response.last_modified,
        )
        await self._store_page(project, fresh)
        return PageResult(fresh, "miss")

    @staticmethod
    def _parse(project: str, response, hosts: FileHosts) -> ProjectPage:
        if response.content_type == JSON_V1 or response.content_type.endswith("+json"):
            page = parse_json_page(response.body, response.url, hosts)
        elif "html" in response.content_type:
            page = parse_html_page(response.body, response.url, project, hosts)
        else:
            raise PageError(f"upstream sent a page of type {response.content_type!r}")
        return page

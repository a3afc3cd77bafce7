"""The PyPI JSON API, proxied and cached the way pages are.

pip-tools asks `…/PROJECT/json` for the hashes of a release and, finding none, downloads every
file of it to hash them; poetry, pip-audit, renovate and dependabot read the same documents.
A document is stored as the upstream sent it, with its validators, under a key of its own;
the freshness decision is the pages' one (`policy.page_action`, page TTL for a document,
negative TTL for "none"), with revalidation, stale-if-error and one fetch per document at a
time. Its file URLs are pointed at the proxy's own /simple/PROJECT/FILENAME when it is
rendered for a client (`api_documents.rewritten`), so downloads come back through the proxy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from urllib.parse import quote

from yarl import URL

from cacheproxy.documents import policy
from cacheproxy.documents.memo import MAX_PARSED_FILES, MAX_RENDERED_BYTES, VersionedCache
from cacheproxy.documents.policy import PageAction
from cacheproxy.documents.singleflight import SingleFlight
from cacheproxy.errors import BadUpstreamPage, DocumentError, UpstreamError, UpstreamRefused
from cacheproxy.jsonapi.document import file_count, parse_document
from cacheproxy.jsonapi.document import render_document as render_body
from cacheproxy.pages.service import PageService
from cacheproxy.protocol.render import Rendered, with_variants
from cacheproxy.storage.disk import STORE_WRITE_ERRORS
from cacheproxy.storage.records import CachedDocument

log = logging.getLogger(__name__)

JSON_ACCEPT = "application/json"


@dataclass(frozen=True)
class DocumentAnswer:
    outcome: str  # hit, miss, revalidated, stale, uncached, offline, absent
    rendered: Rendered | None  # None: no such document (or not cached while offline)
    max_age: int
    warning: str | None = None
    refused: str | None = None  # why the install rules refuse the whole project


@dataclass(frozen=True)
class _HotDocument:
    source: CachedDocument  # the stored entry it was rendered from
    rendered: Rendered


class JsonApiService:
    """Documents of one index: `answer(project, release, files_base)`, release "" for the
    project's own document, files_base the absolute URL its files are served under
    (…/simple/), ending in a slash."""

    def __init__(self, pages: PageService) -> None:
        # The pages' settings, store, upstream client and disk, and their freshness decision.
        self.pages = pages
        self.config = pages.config
        self.base = pages.config.json_api_base
        self.store = pages.store
        self.upstream = pages.upstream
        self.disk = pages.disk
        self.clock = pages.clock
        self._flights: SingleFlight[object] = SingleFlight()
        self._stored_entries: VersionedCache[tuple, CachedDocument] = VersionedCache(
            MAX_PARSED_FILES, lambda entry: 1 + file_count(entry.data)
        )
        self._hot: VersionedCache[tuple, _HotDocument] = VersionedCache(
            MAX_RENDERED_BYTES, lambda hot: hot.rendered.size
        )
        self._unreachable_at: float | None = None

    def document_url(self, project: str, release: str) -> URL:
        assert self.base is not None
        path = f"{project}/{release}/json" if release else f"{project}/json"
        return self.base.join(URL(path))

    def _action(self, entry: CachedDocument | None) -> PageAction:
        # The one freshness decision; a document has a page's status, time and validators.
        return self.pages._action(entry)

    def _max_age(self, entry: CachedDocument) -> int:
        config = self.config
        return policy.page_max_age(entry, self.clock(), config.page_ttl, config.negative_ttl)

    async def answer(self, project: str, release: str, files_base: str) -> DocumentAnswer:
        """The document rendered for a client. Raises UpstreamError (UpstreamRefused) when
        there is nothing to serve."""
        refused = self.pages.rules.refusal(project) if self.pages.rules.active else None
        if refused is not None:
            return DocumentAnswer("refused", None, 0, refused=refused)
        if self.base is None:
            # No JSON API upstream: "none" at once, for as long as a missing project.
            return DocumentAnswer("absent", None, int(self.config.negative_ttl))
        entry = await self._stored(project, release)
        action = self._action(entry)
        if action is PageAction.MISSING:
            return DocumentAnswer("offline", None, 0)
        outcome, warning = "hit", None
        if action is not PageAction.SERVE:
            refreshed = await self._flights.run(
                ("refresh", project, release), lambda: self._refresh(project, release, entry)
            )
            assert isinstance(refreshed, tuple)
            entry, outcome, warning = refreshed
        assert entry is not None
        max_age = self._max_age(entry)
        if entry.data is None:
            return DocumentAnswer(outcome, None, max_age)
        rendered = await self._render(project, release, files_base, entry)
        return DocumentAnswer(outcome, rendered, max_age, warning)

    async def _render(
        self, project: str, release: str, files_base: str, entry: CachedDocument
    ) -> Rendered:
        key = (project, release, files_base)
        version = await self.store.page_version(project)
        # What the rules hide changes with the clock: such documents are rendered each time.
        hidden = await self.pages.hidden_files(project)
        hot = None if hidden else self._hot.get(key, version)
        if hot is not None and hot.source is entry:
            return hot.rendered

        def file_url(filename: str) -> str:
            return f"{files_base}{project}/{quote(filename)}"

        assert entry.data is not None
        data = entry.data
        # A large document (thousands of files) takes a while to rewrite and compress.
        rendered = await asyncio.to_thread(
            lambda: with_variants(render_body(data, file_url, hidden))
        )
        if not hidden:
            self._hot.put(key, version, _HotDocument(entry, rendered))
        return rendered

    async def _stored(self, project: str, release: str) -> CachedDocument | None:
        version = await self.store.page_version(project)
        entry = self._stored_entries.get((project, release), version)
        if entry is None:
            found = await self.store.get_api_document(project, release)
            if isinstance(found, CachedDocument):
                entry = found
                self._stored_entries.put((project, release), version, entry)
        return entry

    async def _keep(self, project: str, release: str, entry: CachedDocument) -> bool:
        """Store a document just fetched; False when the store cannot take it (a full disk):
        it is served uncached then, as pages are."""
        if self.disk.full and not await self.disk.has_room(0):
            return False
        try:
            await self.store.put_api_document(project, release, entry)
        except STORE_WRITE_ERRORS as exc:
            log.warning("JSON API document of %s is served without being cached: %s", project, exc)
            return False
        version = await self.store.page_version(project)
        self._stored_entries.put((project, release), version, entry)
        return True

    async def _refresh(
        self, project: str, release: str, entry: CachedDocument | None
    ) -> tuple[CachedDocument, str, str | None]:
        stale_ok = entry is not None and entry.status == 200
        if stale_ok and policy.upstream_resting(self._unreachable_at, self.clock()):
            assert entry is not None
            return entry, "stale", "upstream unreachable"
        try:
            return await self._fetch(project, release, entry)
        except UpstreamRefused:
            raise  # never cached: the credentials may be fixed
        except UpstreamError as exc:
            if exc.unreachable:
                self._unreachable_at = self.clock()
            if not stale_ok:
                raise
            assert entry is not None
            log.warning("serving stale JSON API document for %s: %s", project, exc)
            return entry, "stale", str(exc)

    async def _fetch(
        self, project: str, release: str, entry: CachedDocument | None
    ) -> tuple[CachedDocument, str, str | None]:
        url = self.document_url(project, release)
        headers = policy.revalidation_headers(entry)
        response = await self.upstream.fetch_document("json", url, JSON_ACCEPT, headers)
        if response.status == 304 and entry is not None and entry.status == 200:
            confirmed = dataclasses.replace(entry, fetched_at=self.clock())
            stored = await self._keep(project, release, confirmed)
            return confirmed, "revalidated" if stored else "uncached", None
        policy.check_page_status(response.status, f"{project}'s JSON document")
        data = None
        if response.status == 200:
            try:
                data = await asyncio.to_thread(lambda: parse_document(response.body))
            except DocumentError as exc:
                raise BadUpstreamPage(str(exc)) from None
        fresh = CachedDocument(
            status=200 if data is not None else 404,
            data=data,
            fetched_at=self.clock(),
            etag=response.etag,
            last_modified=response.last_modified,
        )
        stored = await self._keep(project, release, fresh)
        return fresh, "miss" if stored else "uncached", None

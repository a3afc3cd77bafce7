"""The PyPI JSON API, proxied and cached the way pages are.

pip-tools asks `…/PROJECT/json` for the hashes of a release and, finding none, downloads every
file of it to hash them; poetry, pip-audit, renovate and dependabot read the same documents.
A document is stored as the upstream sent it, with its validators, under a key of its own;
it goes through the pages' states and driver (`documents.driver`: page TTL for a document,
negative TTL for "none"), with revalidation, stale-if-error and one fetch per document at a
time. Its file URLs are pointed at the proxy's own /simple/PROJECT/FILENAME when it is
rendered for a client (`api_documents.rewritten`), so downloads come back through the proxy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from yarl import URL

from cacheproxy.config import Config
from cacheproxy.documents.driver import DocumentCache
from cacheproxy.documents.memo import MAX_PARSED_FILES, MAX_RENDERED_BYTES, VersionedCache
from cacheproxy.documents.states import Freshness
from cacheproxy.errors import BadUpstreamPage, DocumentError
from cacheproxy.jsonapi.document import file_count, parse_document
from cacheproxy.jsonapi.document import render_document as render_body
from cacheproxy.pages.visibility import PageVisibility
from cacheproxy.protocol.render import Rendered, with_variants
from cacheproxy.storage.disk import DiskSpace
from cacheproxy.storage.port import StorePort
from cacheproxy.storage.records import CachedDocument
from cacheproxy.upstream import PageResponse, Upstream

JSON_ACCEPT = "application/json"

Key = tuple[str, str]  # (project, release), release "" for the project's own document


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


class StoredDocuments:
    """The JSON API documents of one index as cached documents (a
    `documents.driver.DocumentKind`), kept in memory per page version."""

    name = "JSON API document"

    def __init__(self, base: URL, store: StorePort, upstream: Upstream) -> None:
        self.base = base
        self.store = store
        self.upstream = upstream
        self._entries: VersionedCache[tuple, CachedDocument] = VersionedCache(
            MAX_PARSED_FILES, lambda entry: 1 + file_count(entry.data)
        )

    def url(self, key: Key) -> URL:
        project, release = key
        path = f"{project}/{release}/json" if release else f"{project}/json"
        return self.base.join(URL(path))

    async def stored(self, key: Key) -> CachedDocument | None:
        version = await self.store.page_version(key[0])
        entry = self._entries.get(key, version)
        if entry is None:
            found = await self.store.get_api_document(*key)
            if isinstance(found, CachedDocument):
                entry = found
                self._entries.put(key, version, entry)
        return entry

    def make(
        self, status: int, body: Any, fetched_at: float, etag: str | None, modified: str | None
    ) -> CachedDocument:
        return CachedDocument(status, body, fetched_at, etag, modified)

    def project(self, key: Key) -> str:
        return key[0]

    def describe(self, key: Key) -> str:
        return f"{key[0]}'s JSON document"

    async def peer(self, key: Key) -> None:
        return None  # documents are not shared between nodes

    async def fetch(self, key: Key, headers: dict[str, str]) -> PageResponse:
        return await self.upstream.fetch_document("json", self.url(key), JSON_ACCEPT, headers)

    async def parse(self, key: Key, answer: PageResponse) -> tuple[dict[str, Any], None]:
        try:
            return await asyncio.to_thread(lambda: parse_document(answer.body)), None
        except DocumentError as exc:
            raise BadUpstreamPage(str(exc)) from None

    async def finish(self, extra: Any) -> Any:
        return extra

    async def keep(self, key: Key, entry: CachedDocument) -> None:
        await self.store.put_api_document(*key, entry)
        self._entries.put(key, await self.store.page_version(key[0]), entry)

    async def refreshed(self, key: Key, previous: Any, entry: CachedDocument) -> None:
        pass


class JsonApiService:
    """Documents of one index: `answer(project, release, files_base)`, release "" for the
    project's own document, files_base the absolute URL its files are served under
    (…/simple/), ending in a slash, or None to keep the upstream's file URLs (the
    transparent face)."""

    def __init__(
        self,
        config: Config,
        store: StorePort,
        upstream: Upstream,
        disk: DiskSpace,
        visibility: PageVisibility,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.visibility = visibility
        self.clock = clock
        self.base = config.json_api_base
        self.documents = (
            StoredDocuments(self.base, store, upstream) if self.base is not None else None
        )
        self.cache = DocumentCache(Freshness.of(config), disk, clock)
        self._hot: VersionedCache[tuple, _HotDocument] = VersionedCache(
            MAX_RENDERED_BYTES, lambda hot: hot.rendered.size
        )

    async def answer(self, project: str, release: str, files_base: str | None) -> DocumentAnswer:
        """The document rendered for a client. Raises UpstreamError (UpstreamRefused) when
        there is nothing to serve."""
        refused = self.visibility.project_refusal(project)
        if refused is not None:
            return DocumentAnswer("refused", None, 0, refused=refused)
        if self.documents is None:
            # No JSON API upstream: "none" at once, for as long as a missing project.
            return DocumentAnswer("absent", None, int(self.config.negative_ttl))
        key = (project, release)
        served = await self.cache.refresh(self.documents, key, await self.documents.stored(key))
        if served is None:
            return DocumentAnswer("offline", None, 0)
        entry: CachedDocument = served.entry
        max_age = self.cache.max_age(entry)
        if entry.data is None:
            return DocumentAnswer(served.outcome, None, max_age)
        rendered = await self._render(project, release, files_base, entry)
        return DocumentAnswer(served.outcome, rendered, max_age, served.warning)

    async def _render(
        self, project: str, release: str, files_base: str | None, entry: CachedDocument
    ) -> Rendered:
        key = (project, release, files_base)
        version = await self.store.page_version(project)
        # What the rules hide changes with the clock: such documents are rendered each time.
        hidden = await self.visibility.hidden_files(project)
        hot = None if hidden else self._hot.get(key, version)
        if hot is not None and hot.source is entry:
            return hot.rendered

        def proxy_url(filename: str) -> str:
            return f"{files_base}{project}/{quote(filename)}"

        file_url = None if files_base is None else proxy_url
        assert entry.data is not None
        data = entry.data
        # A large document (thousands of files) takes a while to rewrite and compress.
        rendered = await asyncio.to_thread(
            lambda: with_variants(render_body(data, file_url, hidden))
        )
        if not hidden:
            self._hot.put(key, version, _HotDocument(entry, rendered))
        return rendered

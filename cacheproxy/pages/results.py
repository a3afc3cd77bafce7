"""What the page service answers: a page as found (PageResult) and a page as a client is
served it (PageAnswer)."""

from __future__ import annotations

from dataclasses import dataclass

from cacheproxy.documents.memo import HotPage
from cacheproxy.protocol.render import Rendered
from cacheproxy.storage.records import CachedPage


@dataclass(frozen=True)
class PageResult:
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

"""What the install rules and takedowns let a client see of a project (see rules.py and
takedowns.py): which files a client may have, which left the upstream's page, and the page
rendered as the rules leave it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cacheproxy.documents.memo import visible_pages
from cacheproxy.ops.metrics import Metrics
from cacheproxy.pages.rules import Rules, Visible
from cacheproxy.pages.takedowns import base_filename, taken_down_reason
from cacheproxy.protocol import render
from cacheproxy.protocol.compact import CompactPage, expand
from cacheproxy.protocol.negotiation import JSON_V1
from cacheproxy.protocol.page import ProjectPage, with_file_facts, with_upstream_urls
from cacheproxy.protocol.render import Rendered, with_variants
from cacheproxy.storage.port import StorePort
from cacheproxy.storage.records import CachedPage


@dataclass(frozen=True)
class Refused:
    """A file the proxy will not serve: held back by a rule (403) or taken down upstream
    (410); the reason is one line a client can show."""

    reason: str
    status: int = 403
    outcome: str = "refused"


class PageSource(Protocol):
    """Where the pages the rules are applied to come from (the page service)."""

    async def stored_page(self, project: str) -> CachedPage | None:
        """The stored page as it is, not refreshed."""

    async def current_page(self, project: str) -> CachedPage | None:
        """The page, refreshed if it is due; None when there is none."""


class PageVisibility:
    """The install rules as applied to one index's pages: refusals of projects and files,
    files hidden now, the page rendered as clients may see it, takedowns."""

    def __init__(
        self,
        rules: Rules,
        store: StorePort,
        pages: PageSource,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.rules = rules
        self.store = store
        self.pages = pages
        self.metrics = metrics
        self.clock = clock
        # Pages as the rules leave them, per page version, while the clock leaves them so.
        self._visible = visible_pages()

    def __len__(self) -> int:
        """How many judged pages are held."""
        return len(self._visible)

    def project_refusal(self, project: str) -> str | None:
        """Why the rules refuse the whole project, or None."""
        return self.rules.refusal(project) if self.rules.active else None

    def apply(self, page: ProjectPage) -> Visible:
        return self.rules.visible(page, self.clock()) if self.rules.active else Visible(page)

    def renders_lines(self, stored: ProjectPage | CompactPage, content_type: str) -> bool:
        """Whether the page is rendered from its stored lines, no rule to apply."""
        return content_type == JSON_V1 and not self.rules.active and isinstance(stored, CompactPage)

    def render(
        self,
        stored: ProjectPage | CompactPage,
        facts: dict,
        content_type: str,
        upstream_urls: bool = False,
    ) -> tuple[list[str], float, Rendered]:
        """The page as clients may see it, rendered: the rules that hid files, when the clock
        changes what is hidden, and the body. upstream_urls: each file at its upstream URL
        rather than the proxy's (the transparent face). CPU work: run it in a thread."""
        if not upstream_urls and self.renders_lines(stored, content_type):
            assert isinstance(stored, CompactPage)
            return [], math.inf, with_variants(render.render_compact_json(stored, facts))
        page = with_file_facts(expand(stored), facts)
        visible = self.apply(with_upstream_urls(page) if upstream_urls else page)
        body = (render.render_json if content_type == JSON_V1 else render.render_html)(visible.page)
        hidden = [hidden.rule for hidden in visible.hidden.values()]
        return hidden, visible.changes_at, with_variants(body)

    async def refusal(self, project: str, filename: str) -> Refused | None:
        """Why the rules refuse a file (or its .metadata or .provenance), or None."""
        if not self.rules.active:
            return None
        refused = self.rules.refusal(project)
        if refused is not None:
            self.metrics.policy_hidden.labels("project", "file").inc()
            return Refused(refused)
        visible = await self._visible_page(project)
        hidden = visible and visible.hidden.get(base_filename(filename))
        if not hidden:
            return None
        self.metrics.policy_hidden.labels(hidden.rule, "file").inc()
        return Refused(hidden.reason)

    async def hidden_files(self, project: str) -> frozenset[str]:
        """The files of a project the rules hide now (for other views of it: the JSON API)."""
        if not self.rules.active:
            return frozenset()
        visible = await self._visible_page(project)
        return frozenset(visible.hidden) if visible is not None else frozenset()

    async def visible_files(self, project: str) -> Mapping[str, dict[str, Any]] | None:
        """The files of the project's page that a client may have now, by name, for a look at
        a few of them. Without rules, the stored page's own entries, each decoded as it is
        looked up (without file facts: they never change which file a resolver picks);
        with rules, the page as they leave it, made for this look and not kept (expanded, a
        large page is megabytes of objects)."""
        if not self.rules.active:
            entry = await self.pages.stored_page(project)
            page = entry and entry.page
            if isinstance(page, CompactPage):
                return page.files
        visible = await self._visible_page(project, keep=False)
        if visible is None:
            return None
        return {file["filename"]: file for file in visible.page.data["files"]}

    async def _visible_page(self, project: str, keep: bool = True) -> Visible | None:
        version = await self.store.page_version(project)
        visible = self._visible.get(project, version)
        if visible is not None and self.clock() < visible.changes_at:
            return visible
        entry = await self.pages.stored_page(project)
        if entry is None:  # a first request for a file: the page says whether it may be had
            entry = await self.pages.current_page(project)
            version = await self.store.page_version(project)
        if entry is None or entry.page is None:
            return None
        facts = await self.store.file_facts(project)
        stored = entry.page
        # The stored page is compact: expanded, completed and judged in a thread.
        visible = await asyncio.to_thread(
            lambda: self.apply(with_file_facts(expand(stored), facts))
        )
        if keep:
            self._visible.put(project, version, visible)
        return visible

    async def taken_down(self, project: str, filename: str) -> Refused | None:
        """A 410 for a file the upstream's page stopped listing, or None."""
        gone = await asyncio.to_thread(self.store.taken_down, project)
        seen_at = gone.get(base_filename(filename))
        return None if seen_at is None else Refused(taken_down_reason(filename, seen_at), 410)

"""The install rules and takedowns as the page service applies them (see rules.py and
takedowns.py): which files a client may have, which left the upstream's page, and the page
rendered as the rules let clients see it."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from cacheproxy.documents.memo import VersionedCache
from cacheproxy.files.answers import Refused
from cacheproxy.pages.rules import Rules, Visible
from cacheproxy.pages.takedowns import base_filename, removed_files, taken_down_reason
from cacheproxy.protocol import render
from cacheproxy.protocol.compact import CompactPage, expand
from cacheproxy.protocol.negotiation import JSON_V1
from cacheproxy.protocol.page import ProjectPage, with_file_facts
from cacheproxy.protocol.render import Rendered, with_variants
from cacheproxy.storage.disk import STORE_WRITE_ERRORS
from cacheproxy.storage.local import Store
from cacheproxy.storage.records import CachedPage
from cacheproxy.upstream import Upstream

log = logging.getLogger(__name__)


class PageRules:
    """Part of PageService: the rules' side of it, kept apart so the page path reads alone."""

    store: Store
    upstream: Upstream
    rules: Rules
    clock: Callable[[], float]
    _visible: VersionedCache

    async def _stored_page(self, project: str) -> CachedPage | None:  # PageService's own
        raise NotImplementedError

    async def get(self, project: str):  # PageService's own
        raise NotImplementedError

    def _apply_rules(self, page: ProjectPage) -> Visible:
        return self.rules.visible(page, self.clock()) if self.rules.active else Visible(page)

    def _renders_lines(self, stored: ProjectPage | CompactPage, content_type: str) -> bool:
        """Whether the page is rendered from its stored lines, no rule to apply."""
        return content_type == JSON_V1 and not self.rules.active and isinstance(stored, CompactPage)

    def _render_page(
        self, stored: ProjectPage | CompactPage, facts: dict, content_type: str
    ) -> tuple[list[str], float, Rendered]:
        """The page as clients may see it, rendered: the rules that hid files, when the clock
        changes what is hidden, and the body. CPU work: run it in a thread."""
        if self._renders_lines(stored, content_type):
            assert isinstance(stored, CompactPage)
            return [], math.inf, with_variants(render.render_compact_json(stored, facts))
        visible = self._apply_rules(with_file_facts(expand(stored), facts))
        body = (render.render_json if content_type == JSON_V1 else render.render_html)(visible.page)
        hidden = [hidden.rule for hidden in visible.hidden.values()]
        return hidden, visible.changes_at, with_variants(body)

    async def refusal(self, project: str, filename: str) -> Refused | None:
        """Why the rules refuse a file (or its .metadata or .provenance), or None."""
        if not self.rules.active:
            return None
        refused = self.rules.refusal(project)
        if refused is not None:
            self.upstream.metrics.policy_hidden.labels("project", "file").inc()
            return Refused(refused)
        visible = await self._visible_page(project)
        hidden = visible and visible.hidden.get(base_filename(filename))
        if not hidden:
            return None
        self.upstream.metrics.policy_hidden.labels(hidden.rule, "file").inc()
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
            entry = await self._stored_page(project)
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
        entry = await self._stored_page(project)
        if entry is None:  # a first request for a file: the page says whether it may be had
            result = await self.get(project)
            entry = result and result.entry
            version = await self.store.page_version(project)
        if entry is None or entry.page is None:
            return None
        facts = await self.store.file_facts(project)
        stored = entry.page
        # The stored page is compact: expanded, completed and judged in a thread.
        visible = await asyncio.to_thread(
            lambda: self._apply_rules(with_file_facts(expand(stored), facts))
        )
        if keep:
            self._visible.put(project, version, visible)
        return visible

    async def taken_down(self, project: str, filename: str) -> Refused | None:
        """A 410 for a file the upstream's page stopped listing, or None."""
        gone = await asyncio.to_thread(self.store.taken_down, project)
        seen_at = gone.get(base_filename(filename))
        return None if seen_at is None else Refused(taken_down_reason(filename, seen_at), 410)

    async def _forget_taken_down(
        self, project: str, old: CachedPage | None, new: CachedPage
    ) -> None:
        removed = removed_files(old, new)
        if not removed:
            return
        shown = ", ".join(removed[:3])
        log.warning("%s: %d files gone from the upstream's page: %s", project, len(removed), shown)
        try:
            await asyncio.to_thread(self.store.forget_taken_down, project, removed, self.clock())
        except STORE_WRITE_ERRORS as exc:
            log.warning("files taken down upstream are still in the cache: %s", exc)

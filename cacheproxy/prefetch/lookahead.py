"""Resolution lookahead: fetch what a resolver will ask for next before it asks.

Against an upstream that serves no PEP 658 metadata, a resolver's walk is a chain of round
trips: a project's page, then the metadata of the wheel it picks, then the pages of that
wheel's dependencies, and so on. When a client is served a page, the proxy guesses the wheel
it will pick (the newest release the rules let it see, the best wheel for the platform its
User-Agent names), reads that wheel's metadata from its tail, and fetches the pages of its
dependencies, and so on down to a few levels, in the background. The client's own requests
then join the reads under way or find them stored: the same single-flights serve both, so
nothing is fetched twice.

A resolver for every platform at once (uv lock) asks for the metadata of each release's first
wheel by name, not of the wheel for its own platform: once a client asks for such a wheel
where the one for its platform was there, its later visits pick the first wheel too.

Bounded: the visits below a page a client was served run a few at a time (the page's own
visit reads the wheel the client asks for next, so it never waits behind them), a depth
limit, each project visited once per process (a bounded memory of them), failures logged at
debug level only, and never a wait for a client.
Wheels whose metadata the upstream serves are left alone: the client's own fetch of it is as
quick as the proxy's would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet

from cacheproxy.files.tail_metadata import TailMetadata
from cacheproxy.ops.metrics import Metrics
from cacheproxy.pages.service import PageService
from cacheproxy.protocol.client_platform import ClientPlatform, client_platform
from cacheproxy.protocol.page import METADATA_SUFFIX
from cacheproxy.protocol.requirements import (
    ANY_VERSION,
    dependencies,
    likely_wheel,
    wheel_pick,
)
from cacheproxy.storage.port import FileStore

log = logging.getLogger(__name__)

# Levels of dependencies looked ahead below a page a client asked for: each page the client
# then asks for starts its own lookahead, so the proxy stays this far ahead of it.
MAX_DEPTH = 2
# Visits below the pages clients asked for, at a time: each is a page fetch and two or three
# small range reads. A cold resolution finds a few dozen dependencies within a second; at 6,
# those of the last requirements read waited half a second behind the first ones.
CONCURRENCY = 12
# Projects remembered as looked ahead; beyond that the oldest may be visited again.
REMEMBERED = 10_000
# Pages served without being stored (a full disk, an unreachable upstream): reading the page
# again to look ahead would cost another upstream fetch, or fail.
_NOT_STORED = frozenset({"uncached", "stale"})


@dataclass(frozen=True)
class _Visit:
    project: str
    specifier: SpecifierSet  # the releases the requirement that led here admits
    depth: int  # 0: the page a client asked for
    content_type: str  # the client's, so the pages fetched ahead are rendered as it asks
    platform: ClientPlatform
    user_agent: str  # whom the visit is for: what it learned of how the client picks wheels


class _Recent:
    """A bounded set, oldest out first."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def __contains__(self, item: str) -> bool:
        return item in self._items

    def add(self, item: str) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        if len(self._items) > self._size:
            self._items.popitem(last=False)


class Lookahead:
    def __init__(
        self,
        pages: PageService,
        tail: TailMetadata,
        store: FileStore,
        metrics: Metrics,
        *,
        enabled: bool = True,
        max_depth: int = MAX_DEPTH,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.pages = pages
        self.tail = tail
        self.store = store
        self.enabled = enabled
        self.max_depth = max_depth
        self._fetches = metrics.lookahead_fetches
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._visited = _Recent(REMEMBERED)  # a visit started, at any depth
        self._expanded = _Recent(REMEMBERED)  # a visit started that may go on to dependencies
        # User agents by how they were seen picking wheels; a client is judged until it is in one.
        self._first_pickers = _Recent(REMEMBERED)
        self._platform_pickers = _Recent(REMEMBERED)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def concurrency(self) -> int:
        """Visits below a page that run at once (a page's own visit takes no slot)."""
        return self._concurrency

    @concurrency.setter
    def concurrency(self, slots: int) -> None:
        """For visits that start waiting from now on; those already in keep their slots."""
        self._concurrency = slots
        self._slots = asyncio.Semaphore(slots)

    def page_served(
        self, project: str, content_type: str, user_agent: str | None, outcome: str
    ) -> None:
        """A client was served the project's page (answered with outcome): look ahead from
        it, in the background."""
        if self.enabled and outcome not in _NOT_STORED and project not in self._expanded:
            platform = client_platform(user_agent)
            self._start(_Visit(project, ANY_VERSION, 0, content_type, platform, user_agent or ""))

    def metadata_asked(self, project: str, wheel: str, user_agent: str | None) -> None:
        """A client asked for a wheel's metadata: learn from it, in the background, whether
        the client picks each release's first wheel rather than its platform's."""
        agent = user_agent or ""
        judged = agent in self._first_pickers or agent in self._platform_pickers
        if self.enabled and not judged and not _runs_anywhere(wheel):
            self._track(self._learn_pick(project, wheel, agent))

    async def _learn_pick(self, project: str, wheel: str, user_agent: str) -> None:
        try:
            files = await self.pages.visible_files(project)
        except Exception as exc:  # the client's own request tells it what went wrong
            log.debug("lookahead: no page of %s to learn from: %s", project, exc)
            return
        platform = client_platform(user_agent)
        # A large page's thousands of names: not on the event loop.
        pick = await asyncio.to_thread(wheel_pick, files, wheel, platform) if files else None
        if pick == "first":
            log.debug("lookahead: %s picks each release's first wheel", user_agent[:40])
            self._first_pickers.add(user_agent)
        elif pick == "platform":
            self._platform_pickers.add(user_agent)

    async def settled(self) -> None:
        """Until every visit started so far (and those they started) is done: tests."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, visit: _Visit) -> None:
        self._visited.add(visit.project)
        if visit.depth < self.max_depth:
            self._expanded.add(visit.project)
        self._track(self._visit(visit))

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _visit(self, visit: _Visit) -> None:
        try:
            # A page's own visit takes no slot: the client reads this metadata too, and the
            # reads join.
            slot = contextlib.nullcontext() if visit.depth == 0 else self._slots
            async with slot:
                metadata = await self._metadata(visit)
            if metadata is None or visit.depth >= self.max_depth:
                return
            found = await asyncio.to_thread(dependencies, metadata, visit.platform)
        except Exception as exc:  # a guess that failed costs nothing but the guess
            log.debug("lookahead of %s stopped: %s", visit.project, exc)
            return
        depth = visit.depth + 1
        for dependency in found:
            name = dependency.project
            if name in self._expanded or (depth >= self.max_depth and name in self._visited):
                continue
            self._start(
                dataclasses.replace(
                    visit, project=name, specifier=dependency.specifier, depth=depth
                )
            )

    async def _metadata(self, visit: _Visit) -> bytes | None:
        """The METADATA of the wheel the client will likely pick, read if need be; None when
        there is no such wheel or the proxy does not read it (the upstream serves it)."""
        project = visit.project
        if visit.depth > 0:  # the page a client was served is there already
            # Rendered as the client will ask for it, so its request is a hit.
            answer = await self.pages.answer(project, visit.content_type)
            if answer.outcome == "miss":
                self._fetches.labels("page").inc()
            if answer.page is None or answer.outcome in _NOT_STORED:
                return None
        files = await self.pages.visible_files(project)
        if files is None:
            return None
        # Thousands of files on a large page: not on the event loop.
        specifier, platform = visit.specifier, visit.platform
        first = visit.user_agent in self._first_pickers
        wheel = await asyncio.to_thread(likely_wheel, files, specifier, platform, first)
        if not wheel:
            return None
        stored = await self.store.find_file(project, wheel + METADATA_SUFFIX)
        if stored is not None:
            return await asyncio.to_thread(Path(stored.path).read_bytes)
        source = await self.pages.find_file(project, wheel)
        if source is None or not source.extract_metadata:
            return None
        if await self.store.find_file(project, wheel) is not None:
            return None  # cached whole: the client's request extracts it from there
        self._fetches.labels("metadata").inc()
        log.debug("lookahead: metadata of %s", wheel)
        return await self.tail.read(project, wheel, source)


def _runs_anywhere(wheel: str) -> bool:
    """A wheel every platform takes: asking for it tells nothing of how a client picks."""
    return wheel.endswith("-any.whl")

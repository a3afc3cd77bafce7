"""Memory caches of values derived from the store, each valid for one store version.

Two are kept per index: the pages in use, in their compact stored form (a cold install asks
about each wheel three or four times); and hot pages rendered, hashed and compressed, so a warm
page costs a dictionary lookup. Both are weighed in bytes and share one memory budget
(`--memory-budget`), split between them.

A value is returned only while the version it was made at is still current, so nothing
derived from an older page can be served. The cache is bounded by a total weight (bytes,
file entries...), least recently used first out; one value heavier than a quarter of the
bound is not kept, so a single giant cannot push out everything else.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cacheproxy.protocol.compact import CompactPage
from cacheproxy.protocol.render import Rendered
from cacheproxy.storage.records import CachedPage

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Version = tuple[int, ...]  # a store version: the page alone, or the page and its facts

# The pages as the install rules let clients see them, and the JSON API's documents.
MAX_PARSED_FILES = 20_000
MAX_RENDERED_BYTES = 32 * 1024 * 1024
DEFAULT_MEMORY_BUDGET = 32 * 1024 * 1024
# Of the budget, for the compact pages; the rest holds rendered ones (JSON or HTML, and gzip).
PARSED_SHARE = 3 / 8
# What the entry around a page costs, so a page without files (a 404) still weighs something.
_ENTRY_BYTES = 512


class VersionedCache(Generic[K, V]):
    def __init__(self, max_weight: int, weigh: Callable[[V], int]) -> None:
        self.max_weight = max_weight
        self.weigh = weigh
        self._values: collections.OrderedDict[K, tuple[Version, V]] = collections.OrderedDict()
        self._weight = 0

    def get(self, key: K, version: Version) -> V | None:
        held = self._values.get(key)
        if held is None or held[0] != version:
            return None
        self._values.move_to_end(key)
        return held[1]

    def put(self, key: K, version: Version, value: V) -> None:
        old = self._values.pop(key, None)
        if old is not None:
            self._weight -= self.weigh(old[1])
        weight = self.weigh(value)
        if weight > self.max_weight // 4:
            return
        self._values[key] = (version, value)
        self._weight += weight
        while self._weight > self.max_weight:
            _, (_, evicted) = self._values.popitem(last=False)
            self._weight -= self.weigh(evicted)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        """Whether a value is held for key, at any version."""
        return key in self._values

    @property
    def weight(self) -> int:
        """The accounted weight of what is held (bytes, for the page caches)."""
        return self._weight


@dataclass(frozen=True)
class HotPage:
    """A page as rendered for one content type, at one store version."""

    head: CachedPage  # the stored entry's status and validators, without the parsed page
    rendered: Rendered
    # When the clock makes a file the install rules leave off visible: not served after.
    changes_at: float = math.inf


def parsed_pages(
    max_bytes: int = int(DEFAULT_MEMORY_BUDGET * PARSED_SHARE),
) -> VersionedCache[str, CachedPage]:
    def weight(entry: CachedPage) -> int:
        page = entry.page
        return _ENTRY_BYTES + (page.weight if isinstance(page, CompactPage) else 0)

    return VersionedCache(max_bytes, weight)


def rendered_pages(
    max_bytes: int = DEFAULT_MEMORY_BUDGET - int(DEFAULT_MEMORY_BUDGET * PARSED_SHARE),
) -> VersionedCache[tuple, HotPage]:
    return VersionedCache(max_bytes, lambda hot: hot.rendered.size)


def memory_caches(
    budget: int = DEFAULT_MEMORY_BUDGET,
) -> tuple[VersionedCache[str, CachedPage], VersionedCache[tuple, HotPage]]:
    """The parsed and the rendered page caches of one index, together within budget bytes."""
    parsed = int(budget * PARSED_SHARE)
    return parsed_pages(parsed), rendered_pages(budget - parsed)


def visible_pages(max_files: int = MAX_PARSED_FILES) -> VersionedCache[str, Any]:
    """Pages as the install rules let clients see them (cache/rules.py: Visible), for the
    file requests that must be refused when their file is hidden."""
    return VersionedCache(max_files, lambda visible: 1 + len(visible.page.data["files"]))

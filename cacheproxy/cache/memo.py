"""Memory caches of values derived from the store, each valid for one store version.

Two are kept per index: the pages in use, parsed (a cold install asks about each wheel three or
four times, and unpickling a large page holds the GIL for tens of milliseconds), bounded by
the file entries they hold; and hot pages rendered, hashed and compressed, bounded by bytes,
so a warm page costs a dictionary lookup.

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

from cacheproxy.cache.policy import CachedPage
from cacheproxy.simple.render import Rendered

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Version = tuple[int, int]

MAX_PARSED_FILES = 20_000
MAX_RENDERED_BYTES = 32 * 1024 * 1024


class VersionedCache(Generic[K, V]):
    def __init__(self, max_weight: int, weigh: Callable[[V], int]) -> None:
        self.max_weight = max_weight
        self._weigh = weigh
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
            self._weight -= self._weigh(old[1])
        weight = self._weigh(value)
        if weight > self.max_weight // 4:
            return
        self._values[key] = (version, value)
        self._weight += weight
        while self._weight > self.max_weight:
            _, (_, evicted) = self._values.popitem(last=False)
            self._weight -= self._weigh(evicted)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class HotPage:
    """A page as rendered for one content type, at one store version."""

    head: CachedPage  # the stored entry's status and validators, without the parsed page
    rendered: Rendered
    # When the clock makes a file the install rules leave off visible: not served after.
    changes_at: float = math.inf


def parsed_pages(max_files: int = MAX_PARSED_FILES) -> VersionedCache[str, CachedPage]:
    # A page without files (a 404, an empty project) still takes a slot.
    def weight(entry: CachedPage) -> int:
        return 1 + (len(entry.page.data.get("files", ())) if entry.page is not None else 0)

    return VersionedCache(max_files, weight)


def rendered_pages(max_bytes: int = MAX_RENDERED_BYTES) -> VersionedCache[tuple, HotPage]:
    return VersionedCache(max_bytes, lambda hot: hot.rendered.size)


def visible_pages(max_files: int = MAX_PARSED_FILES) -> VersionedCache[str, Any]:
    """Pages as the install rules let clients see them (cache/rules.py: Visible), for the
    file requests that must be refused when their file is hidden."""
    return VersionedCache(max_files, lambda visible: 1 + len(visible.page.data["files"]))

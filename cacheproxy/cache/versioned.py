"""A memory cache of values derived from the store, each valid for one store version.

A value is returned only while the version it was made at is still current, so nothing
derived from an older page can be served. The cache is bounded by a total weight (bytes,
file entries...), least recently used first out; one value heavier than a quarter of the
bound is not kept, so a single giant cannot push out everything else.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class VersionedCache(Generic[K, V]):
    def __init__(self, max_weight: int, weigh: Callable[[V], int]) -> None:
        self.max_weight = max_weight
        self._weigh = weigh
        self._values: collections.OrderedDict[K, tuple[int, V]] = collections.OrderedDict()
        self._weight = 0

    def get(self, key: K, version: int) -> V | None:
        held = self._values.get(key)
        if held is None or held[0] != version:
            return None
        self._values.move_to_end(key)
        return held[1]

    def put(self, key: K, version: int, value: V) -> None:
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

"""Run one coroutine per key at a time; later callers for the same key share its result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[T]] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        future = self._running.get(key)
        if future is None:
            # A task of its own, so a caller that goes away does not cancel the others' work.
            future = asyncio.ensure_future(work())
            self._running[key] = future
            future.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(future)

    def is_running(self, key: Hashable) -> bool:
        """Whether a call for key is under way: a caller now would share its result."""
        return key in self._running

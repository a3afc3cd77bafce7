"""Files and the shared tier: a second source before the upstream, and a place to offer
every verified file to the rest of the fleet.

A shared object is copied whole into the download's staging file and checked against its
sha256 before any client sees a byte of it (verify before serve). On a LAN object store that
costs a fraction of a second even for a large wheel, and it buys a fallback nobody notices: a
corrupt object, or a store that stops mid-body, leaves an empty staging file and the same
download goes on from the upstream, so clients get their file and never a cut.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from cacheproxy.errors import SharedTierError
from cacheproxy.files.download import write_at
from cacheproxy.protocol.page import FileSource
from cacheproxy.storage.s3.tier import SharedTier

log = logging.getLogger(__name__)


def expected_sha256(source: FileSource) -> str | None:
    """The key a file would have in the shared tier, if the page states it."""
    return source.hash_value if source.hash_name == "sha256" else None


class SharedFiles:
    def __init__(self, tier: SharedTier) -> None:
        self.tier = tier

    def offer(self, sha256: str, path: str | Path, size: int) -> None:
        """Queue a verified, committed local file for upload; never delays the caller."""
        self.tier.enqueue_file(sha256, Path(path), size)

    async def copy_into(
        self, sha256: str, fd: int, has_room: Callable[[int], Awaitable[bool]], name: str
    ) -> int | None:
        """Copy the shared object with this sha256 to the start of fd, verified; its size, or
        None (and fd emptied) when the tier lacks it, fails or holds corrupt bytes, or the
        disk has no room for it (the upstream path then decides what to do about that)."""
        async with self.tier.open_file(sha256) as body:
            if body is None:
                return None
            if not await has_room(body.size):
                return None
            written = 0
            try:
                async for chunk in body.verified_chunks():
                    await asyncio.to_thread(write_at, fd, chunk, written)
                    written += len(chunk)
            except SharedTierError as exc:
                # The tier counted it (and deleted a corrupt object); the upstream takes over.
                log.warning("shared copy of %s unusable, fetching upstream: %s", name, exc)
                await asyncio.to_thread(os.ftruncate, fd, 0)
                return None
            return written

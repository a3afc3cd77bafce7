"""What stats, verify and prune do with the shared tier: each opens it, works and closes it.

They raise SharedCacheError (bad setting, wrong bucket, rejected keys) and SharedTierError
(the store does not answer); the CLI turns both into one line and exit code 2.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from cacheproxy.config import Config, SharedCacheSettings
from cacheproxy.errors import SharedCacheError, SharedTierError
from cacheproxy.storage.s3.maintenance import PruneReport, VerifyReport
from cacheproxy.storage.s3.tier import SharedTier

T = TypeVar("T")


def all_shared_settings(config: Config) -> list[SharedCacheSettings]:
    """The distinct shared tiers of the main index and every named one, each checked (raises
    SharedCacheError), for `serve` to refuse a bad setting before it binds."""
    found = []
    for each in (config, *(config.for_index(index) for index in config.indexes)):
        settings = each.shared_cache_settings(os.environ)
        if settings is not None and settings not in found:
            found.append(settings)
    return found


async def _with_tier(config: Config, work: Callable[[SharedTier], Awaitable[T]]) -> T:
    settings = config.shared_cache_settings(os.environ)
    if settings is None:
        raise SharedCacheError("no shared cache is configured (--shared-cache s3://BUCKET)")
    tier = SharedTier(settings)
    await tier.open()
    try:
        if tier.degraded:
            raise SharedTierError(f"shared cache {settings} is unavailable: {tier.reason}")
        return await work(tier)
    finally:
        await tier.close()


async def shared_usage(config: Config) -> tuple[str, int, int]:
    """Where the tier is (no keys), and its file objects' count and bytes."""

    async def count(tier: SharedTier) -> tuple[str, int, int]:
        objects = size = 0
        async for obj in tier.iter_files():
            objects += 1
            size += obj.size
        return str(tier.settings), objects, size

    return await _with_tier(config, count)


async def shared_verify(config: Config) -> VerifyReport:
    return await _with_tier(config, lambda tier: tier.verify(remove=True))


async def shared_prune(config: Config, seconds: float) -> PruneReport:
    return await _with_tier(config, lambda tier: tier.prune_older_than(seconds))

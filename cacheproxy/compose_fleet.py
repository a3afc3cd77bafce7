"""The shared tiers of a running proxy: one per distinct setting, however many indexes use it.

The main index and its named indexes may name the same bucket and prefix (a named index falls
back to the main setting): they then share one tier, one connection pool and one upload
queue; their pages are told apart by index name, their files need not be (same sha256, same
bytes). A tier opens with the first index that uses it and closes after the last, once its
upload backlog has drained or the drain timeout has passed.
"""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web

from cacheproxy.config import Config, SharedCacheSettings
from cacheproxy.files.shared import SharedFiles
from cacheproxy.http.keys import INDEX_PREFIX, METRICS, NAMED_INDEXES, SHARED, SHARED_TIERS
from cacheproxy.pages.shared import SharedPages, index_label
from cacheproxy.protocol.filehosts import FileHosts
from cacheproxy.storage.s3.tier import SharedTier

log = logging.getLogger(__name__)
DRAIN_TIMEOUT = 10.0


class SharedTiers:
    def __init__(self, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        self.drain_timeout = drain_timeout
        self._tiers: dict[SharedCacheSettings, tuple[SharedTier, int]] = {}
        self._lock = asyncio.Lock()

    async def acquire(self, settings: SharedCacheSettings) -> tuple[SharedTier, bool]:
        """The open tier for these settings, and whether it was opened just now. Raises
        SharedCacheConfigError (wrong bucket, rejected keys); an unreachable store is not an
        error: the tier starts degraded and its breaker finds the store back."""
        async with self._lock:
            if settings in self._tiers:
                tier, users = self._tiers[settings]
                self._tiers[settings] = (tier, users + 1)
                return tier, False
            tier = SharedTier(settings)
            await tier.open()  # closes its client itself when it raises
            self._tiers[settings] = (tier, 1)
            return tier, True

    async def release(self, tier: SharedTier) -> None:
        async with self._lock:
            held, users = self._tiers[tier.settings]
            if users > 1:
                self._tiers[tier.settings] = (held, users - 1)
                return
            del self._tiers[tier.settings]
        try:
            await asyncio.wait_for(tier.drain(), self.drain_timeout)
        except asyncio.TimeoutError:
            log.warning(
                "shared cache: %d uploads left undone at shutdown (drain took over %.0fs)",
                tier.backlog,
                self.drain_timeout,
            )
        await tier.close()


async def open_shared(
    app: web.Application, config: Config
) -> tuple[SharedPages | None, SharedFiles | None]:
    """The shared tier of this index's app, if its config names one, as the page and file
    services use it; app[SHARED] is set for the ops pages. close_shared(app) undoes it."""
    settings = config.shared_cache_settings(os.environ)
    if settings is None:
        return None, None
    tier, new = await app[SHARED_TIERS].acquire(settings)
    app[SHARED] = tier
    if new:
        app[METRICS].track_shared(tier)
    hosts = FileHosts(config.file_hosts, config.public_upstream)
    return SharedPages(tier, index_label(app[INDEX_PREFIX]), hosts), SharedFiles(tier)


async def close_shared(app: web.Application) -> None:
    tier = app.get(SHARED)
    if tier is not None:
        await app[SHARED_TIERS].release(tier)


def shared_cache_state(app: web.Application) -> str | None:
    """For /ready and the status page: None without a shared tier, "ok", or "shared cache
    degraded: REASON" for the first degraded tier of any index."""
    tiers = [a.get(SHARED) for a in (app, *app.get(NAMED_INDEXES, {}).values())]
    tiers = [tier for tier in tiers if tier is not None]
    if not tiers:
        return None
    for tier in tiers:
        if tier.degraded:
            return f"shared cache degraded: {tier.reason}"
    return "ok"

"""The composition root: the services of one index, each built with its collaborators passed
in (config, storage, upstream client, disk, clock, metrics, shared tier), and closed in order.

The HTTP layer opens one set per index (the main index and each named index) and hands the
services to its views; nothing here knows about HTTP.

The main index and its named indexes may name the same shared bucket and prefix (a named
index falls back to the main setting): they then share one tier, one connection pool and one
upload queue, held by SharedTiers; their pages are told apart by index name, their files need
not be (same sha256, same bytes). A tier opens with the first index that uses it and closes
after the last, once its upload backlog has drained or the drain timeout has passed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial

from cacheproxy.config import Config, SharedCacheSettings
from cacheproxy.files.downloads import Downloads
from cacheproxy.files.service import FileService
from cacheproxy.jsonapi.service import JsonApiService
from cacheproxy.ops.metrics import Metrics
from cacheproxy.pages.service import PageService
from cacheproxy.pages.shared import MAIN_INDEX, SharedPages
from cacheproxy.prefetch.lookahead import Lookahead
from cacheproxy.protocol.parse import FileHosts
from cacheproxy.storage.disk import DiskSpace
from cacheproxy.storage.local import Store
from cacheproxy.storage.s3.tier import SharedTier
from cacheproxy.upstream import Upstream

log = logging.getLogger(__name__)
DRAIN_TIMEOUT = 10.0


class SharedTiers:
    """The shared tiers of a running proxy: one per distinct setting, however many indexes
    use it."""

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


@dataclass(frozen=True)
class IndexServices:
    """What one index serves with; close_index_services closes it."""

    store: Store
    disk: DiskSpace
    upstream: Upstream
    pages: PageService
    downloads: Downloads
    files: FileService
    json_api: JsonApiService
    lookahead: Lookahead
    shared: SharedTier | None  # None without a shared tier


async def open_index_services(
    config: Config,
    *,
    name: str | None,
    metrics: Metrics,
    clock: Callable[[], float],
    disk_reserve: int,
    tiers: SharedTiers,
) -> IndexServices:
    """Open one index's services: name is None for the main index, config is the index's
    own (Config.for_index). Raises SharedCacheConfigError first, before anything else is
    open, for a wrong bucket or rejected keys; whatever was opened is closed on any error."""
    async with AsyncExitStack() as opened:
        tier = await _acquire_shared(config, metrics, tiers)
        if tier is not None:
            opened.push_async_callback(tiers.release, tier)
        store = Store(config.cache_dir, config.max_size)
        await store.open()
        opened.push_async_callback(store.close)
        upstream = Upstream(config, metrics)
        await upstream.open()
        opened.push_async_callback(upstream.close)
        disk = DiskSpace(store.staging_dir, disk_reserve)

        shared_pages = None
        if tier is not None:
            hosts = FileHosts(config.file_hosts, config.public_upstream)
            shared_pages = SharedPages(tier, name or MAIN_INDEX, hosts)
        pages = PageService(
            config, store, upstream, disk, metrics, clock=clock, shared=shared_pages
        )
        downloads = Downloads(store, upstream, disk, tier)
        files = FileService(store, pages, downloads, upstream, disk, offline=config.offline)
        json_api = JsonApiService(config, store, upstream, disk, pages.visibility, clock=clock)
        enabled = config.lookahead and not config.offline
        lookahead = Lookahead(pages, files.tail_metadata, store, metrics, enabled=enabled)

        metrics.track_in_flight(lambda: len(downloads))
        for cache in ("parsed", "rendered"):
            metrics.track_memory(cache, partial(_held, pages, cache))
        opened.pop_all()  # all open: close_index_services closes them from now on
    return IndexServices(
        store, disk, upstream, pages, downloads, files, json_api, lookahead, shared=tier
    )


async def close_index_services(services: IndexServices, tiers: SharedTiers) -> None:
    """Stop the background work first, then drain the shared uploads (with a timeout) while
    the store they read from is still open."""
    await services.lookahead.close()
    await services.downloads.close()
    if services.shared is not None:
        await tiers.release(services.shared)
    await services.upstream.close()
    await services.store.close()


def _held(pages: PageService, cache: str) -> int:
    return pages.memory_held()[cache]


async def _acquire_shared(
    config: Config, metrics: Metrics, tiers: SharedTiers
) -> SharedTier | None:
    """The shared tier this index's config names, if any."""
    settings = config.shared_cache_settings(os.environ)
    if settings is None:
        return None
    tier, new = await tiers.acquire(settings)
    if new:
        metrics.track_shared(tier)
    return tier

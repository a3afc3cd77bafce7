"""The aiohttp application factory: resources are opened and closed in cleanup_ctx."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from cacheproxy.compose_fleet import SharedTiers, close_shared, open_shared
from cacheproxy.config import Config, NamedIndex
from cacheproxy.files.downloads import Downloads
from cacheproxy.files.service import FileService
from cacheproxy.http.access import require_token
from cacheproxy.http.jsonapi_views import add_json_api_routes
from cacheproxy.http.keys import (
    CLOCK,
    CONFIG,
    DISK,
    DISK_RESERVE_BYTES,
    FILES,
    INDEX_PREFIX,
    JSON_API,
    LOOKAHEAD,
    METRICS,
    NAMED_INDEXES,
    PAGES,
    SHARED_TIERS,
    STORE,
)
from cacheproxy.http.ops import add_ops_routes
from cacheproxy.http.urls import index_path
from cacheproxy.http.views import add_routes
from cacheproxy.jsonapi.service import JsonApiService
from cacheproxy.ops import runtime
from cacheproxy.pages.service import PageService
from cacheproxy.prefetch.lookahead import Lookahead
from cacheproxy.storage.disk import DISK_RESERVE, DiskSpace
from cacheproxy.storage.local import Store
from cacheproxy.upstream import Upstream

log = logging.getLogger(__name__)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    # First: a wrong bucket or rejected keys stop the start before anything else is open.
    shared_pages, shared_files = await open_shared(app, config)
    store = Store(config.cache_dir, config.max_size)
    await store.open()
    upstream = Upstream(config, app[METRICS])
    await upstream.open()
    disk = DiskSpace(store.staging_dir, app[DISK_RESERVE_BYTES])
    pages = PageService(config, store, upstream, disk, clock=app[CLOCK], shared=shared_pages)
    downloads = Downloads(store, upstream, disk, shared_files)
    app[METRICS].track_in_flight(lambda: len(downloads))
    for cache in ("parsed", "rendered"):
        app[METRICS].track_memory(cache, lambda cache=cache: pages.memory_held()[cache])
    app[STORE] = store
    app[DISK] = disk
    app[PAGES] = pages
    app[FILES] = FileService(store, pages, downloads, upstream, disk, offline=config.offline)
    app[JSON_API] = JsonApiService(pages)
    enabled = config.lookahead and not config.offline
    app[LOOKAHEAD] = Lookahead(pages, app[FILES].tail_metadata, store, enabled=enabled)
    try:
        yield
    finally:
        await app[LOOKAHEAD].close()
        await downloads.close()
        await close_shared(app)  # drains the upload backlog first, with a timeout
        await upstream.close()
        await store.close()


def _named_index_app(config: Config, index: NamedIndex, root: web.Application) -> web.Application:
    """One named index: its own upstream, TTLs and store, so nothing mixes with the others;
    the root's middlewares (metrics, access control) apply to it as well."""
    app = web.Application(client_max_size=1024)
    app[CONFIG] = config.for_index(index)
    app[CLOCK] = root[CLOCK]
    app[DISK_RESERVE_BYTES] = root[DISK_RESERVE_BYTES]
    app[METRICS] = root[METRICS]
    app[SHARED_TIERS] = root[SHARED_TIERS]
    app[INDEX_PREFIX] = f"/index/{index.name}"
    app.cleanup_ctx.append(_resources)
    add_routes(app)
    add_json_api_routes(app)
    return app


async def index_list(request: web.Request) -> web.Response:
    lines = [index_path(), *(index_path(name) for name in request.app[NAMED_INDEXES])]
    return web.Response(text="\n".join(lines) + "\n")


@web.middleware
async def small_socket_reads(request: web.Request, handler) -> web.StreamResponse:
    """Client connections read in small pieces (ops/runtime.py says why)."""
    runtime.limit_socket_reads(request.transport)
    return await handler(request)


def create_app(
    config: Config, clock: Callable[[], float] = time.time, *, disk_reserve: int = DISK_RESERVE
) -> web.Application:
    """The proxy as an aiohttp app; clock is injectable so tests can move time, and the free
    space kept in reserve so a test can fill a small disk rather than a large one."""
    # Only GET and HEAD are routed, so no request body is ever read.
    app = web.Application(client_max_size=1024)
    app[CONFIG] = config
    app[CLOCK] = clock
    app[DISK_RESERVE_BYTES] = disk_reserve
    app[INDEX_PREFIX] = ""
    app[SHARED_TIERS] = SharedTiers()
    app.cleanup_ctx.append(_resources)
    app.middlewares.append(small_socket_reads)
    add_ops_routes(app)  # its metrics middleware first: refused requests are counted too
    tokens = config.client_tokens()
    if tokens:
        app.middlewares.append(require_token(tokens))
    add_routes(app)
    add_json_api_routes(app)
    app[NAMED_INDEXES] = {}
    for index in config.indexes:
        sub = _named_index_app(config, index, app)
        app.add_subapp(f"/index/{index.name}", sub)
        app[NAMED_INDEXES][index.name] = sub
    app.router.add_get("/index/", index_list)
    return app

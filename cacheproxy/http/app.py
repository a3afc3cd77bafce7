"""The aiohttp application factory: resources are opened and closed in cleanup_ctx."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from cacheproxy import compose
from cacheproxy.config import Config, NamedIndex
from cacheproxy.http.access import require_token
from cacheproxy.http.jsonapi_views import add_json_api_routes
from cacheproxy.http.keys import (
    CLOCK,
    CONFIG,
    DISK,
    DISK_RESERVE_BYTES,
    FILES,
    JSON_API,
    LOOKAHEAD,
    METRICS,
    NAMED_INDEXES,
    PAGES,
    SHARED,
    SHARED_TIERS,
    STORE,
)
from cacheproxy.http.ops import add_ops_routes
from cacheproxy.http.views import add_routes
from cacheproxy.ops import runtime
from cacheproxy.storage.disk import DISK_RESERVE

log = logging.getLogger(__name__)


def _services(name: str | None) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup_ctx of one index's app (name None for the main index): its services,
    opened by the composition root and put under the app's keys for the views."""

    async def services(app: web.Application) -> AsyncIterator[None]:
        tiers = app[SHARED_TIERS]
        opened = await compose.open_index_services(
            app[CONFIG],
            name=name,
            metrics=app[METRICS],
            clock=app[CLOCK],
            disk_reserve=app[DISK_RESERVE_BYTES],
            tiers=tiers,
        )
        app[STORE] = opened.store
        app[DISK] = opened.disk
        app[PAGES] = opened.pages
        app[FILES] = opened.files
        app[JSON_API] = opened.json_api
        app[LOOKAHEAD] = opened.lookahead
        if opened.shared is not None:
            app[SHARED] = opened.shared  # for the ops pages
        try:
            yield
        finally:
            await compose.close_index_services(opened, tiers)

    return services


def _named_index_app(config: Config, index: NamedIndex, root: web.Application) -> web.Application:
    """One named index: its own upstream, TTLs and store, so nothing mixes with the others;
    the root's middlewares (metrics, access control) apply to it as well."""
    app = web.Application(client_max_size=1024)
    app[CONFIG] = config.for_index(index)
    app[CLOCK] = root[CLOCK]
    app[DISK_RESERVE_BYTES] = root[DISK_RESERVE_BYTES]
    app[METRICS] = root[METRICS]
    app[SHARED_TIERS] = root[SHARED_TIERS]
    app.cleanup_ctx.append(_services(index.name))
    add_routes(app)
    add_json_api_routes(app)
    return app


async def index_list(request: web.Request) -> web.Response:
    """The /simple/ URL of every index: the main one, then each named one."""
    apps = [request.app, *request.app[NAMED_INDEXES].values()]
    lines = [str(app.router["simple"].url_for()) for app in apps]
    return web.Response(text="\n".join(lines) + "\n")


# /simple//attrs/ (an index URL with a trailing slash, joined with a slash) is sent on to
# /simple/attrs/.
_normalize_path = web.normalize_path_middleware(append_slash=False, merge_slashes=True)


@web.middleware
async def connection_reads(request: web.Request, handler) -> web.StreamResponse:
    """Client connections read in small pieces (ops/runtime.py says why): set on a
    connection's first request, only looked at on the others. A path that matches no route
    is normalized (_normalize_path); one middleware for both, as every layer costs a hot
    page request a call."""
    transport = request.transport
    if getattr(transport, "max_size", 0) > runtime.SOCKET_READ_BYTES:
        runtime.limit_socket_reads(transport)
    if request.match_info.http_exception is not None:
        return await _normalize_path(request, handler)
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
    app[SHARED_TIERS] = compose.SharedTiers()
    app.cleanup_ctx.append(_services(None))
    add_ops_routes(app)  # its metrics middleware first: refused and redirected requests counted
    app.middlewares.append(connection_reads)
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
    app.router.add_get("/index/", index_list, name="indexes")
    return app

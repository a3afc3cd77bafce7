"""Endpoints for the people who run the proxy: status page, metrics, liveness, readiness."""

from __future__ import annotations

import time

from aiohttp import web

from cacheproxy.http.keys import (
    CACHE_OUTCOME,
    CONFIG,
    DISK,
    METRICS,
    NAMED_INDEXES,
    PAGES,
    SHARED,
    STARTED_AT,
    STORE,
    STORED_SIZE,
)
from cacheproxy.http.status import StatusSnapshot, render_status
from cacheproxy.http.views import absolute_url
from cacheproxy.ops.metrics import CACHE_HITS, CONNECT_OUTCOMES, CONTENT_TYPE, Metrics

# Not traffic: the charts count what clients of the index ask.
_OPS_ROUTES = frozenset({"status", "metrics", "health", "ready"})


@web.middleware
async def record_metrics(request: web.Request, handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    resource = request.match_info.route.resource
    # Labelled by path (named indexes apart), counted by route name (named indexes alike).
    if resource is None:
        label, route = "unmatched", ""
    else:
        label, route = resource.canonical, resource.name or ""
    if route not in _OPS_ROUTES:
        metrics.history.request()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        metrics.requests.labels(label, str(exc.status)).inc()
        # A 404 from a negative entry, an offline miss or a 502 after a retry still has an
        # outcome; counting it keeps the outcome totals equal to the page and file requests.
        _count_outcome(request, metrics, route, exc, served=False)
        raise
    metrics.requests.labels(label, str(response.status)).inc()
    _count_outcome(request, metrics, route, response, served=True)
    return response


def _count_outcome(
    request: web.Request, metrics: Metrics, route: str, response: web.StreamResponse, served: bool
) -> None:
    """route is the route's name (views.add_routes, jsonapi_views.ROUTES)."""
    outcome = request.get(CACHE_OUTCOME)
    if not outcome:
        return
    if not response.prepared:
        # Streamed answers have sent their headers already; the access log has every outcome.
        response.headers["X-Cache"] = outcome
    if route.startswith("json-api"):
        # Not a page nor a file: kept out of the file history and the top projects.
        metrics.outcomes.labels("json-api", outcome).inc()
        return
    if route not in ("file", "project"):
        return
    kind = "file" if route == "file" else "page"
    metrics.outcomes.labels(kind, outcome).inc()
    if kind == "file":
        sent_now = request.get(STORED_SIZE, response.content_length) if served else 0
        metrics.history.file(outcome in CACHE_HITS, (sent_now or 0) * (request.method == "GET"))
    if not served:
        # Only answered projects reach "top projects": made-up names must not grow it.
        return
    metrics.project_hits[request.match_info["project"].lower()] += 1
    sent = request.get(STORED_SIZE, response.content_length)
    if kind == "file" and request.method == "GET" and sent:
        source = (
            "cache" if outcome in CACHE_HITS else outcome if outcome == "shared" else "upstream"
        )
        metrics.bytes_served.labels(source).inc(sent)


def _index_apps(app: web.Application) -> list[web.Application]:
    """The main index's app (the root) and each named index's."""
    return [app, *app.get(NAMED_INDEXES, {}).values()]


def shared_cache_state(app: web.Application) -> str | None:
    """For /ready and the status page: None without a shared tier, "ok", or "shared cache
    degraded: REASON" for the first degraded tier of any index."""
    tiers = [tier for tier in (a.get(SHARED) for a in _index_apps(app)) if tier is not None]
    if not tiers:
        return None
    for tier in tiers:
        if tier.degraded:
            return f"shared cache degraded: {tier.reason}"
    return "ok"


async def _refresh_gauges(app: web.Application) -> tuple[int, int, int]:
    """Cache size and limit over every index's store (each named index has its own)."""
    volume = entries = files = limit = evictions = 0
    for index_app in _index_apps(app):
        store = index_app[STORE]
        index_volume, index_entries, index_files = await store.usage()
        volume, entries, files = volume + index_volume, entries + index_entries, files + index_files
        limit += index_app[CONFIG].max_size
        evictions += store.evictions
    metrics = app[METRICS]
    metrics.cache_bytes.set(volume)
    metrics.cache_entries.set(entries)
    metrics.cache_files.set(files)
    metrics.cache_limit.set(limit)
    metrics.record_evictions(evictions)
    return volume, entries, limit


async def _disk_full(app: web.Application) -> bool:
    """Whether any index's disk is full, looked at now (each named index has its own)."""
    return any([await index_app[DISK].refresh() for index_app in _index_apps(app)])


async def metrics_endpoint(request: web.Request) -> web.Response:
    await _refresh_gauges(request.app)
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def status_page(request: web.Request) -> web.Response:
    app = request.app
    volume, entries, limit = await _refresh_gauges(app)
    metrics = app[METRICS]
    hits = sum(metrics.total(metrics.outcomes, kind="file", outcome=o) for o in CACHE_HITS)
    misses = metrics.total(metrics.outcomes, kind="file") - hits
    snapshot = StatusSnapshot(
        index_url=absolute_url(request, app.router["simple"].url_for()),
        upstream=app[CONFIG].public_upstream,
        cache_bytes=volume,
        cache_limit=limit,
        cache_entries=entries,
        file_hits=int(hits),
        file_misses=int(misses),
        bytes_from_cache=int(metrics.total(metrics.bytes_served, source="cache")),
        bytes_from_upstream=int(metrics.total(metrics.bytes_served, source="upstream")),
        top_projects=metrics.project_hits.most_common(10),
        recent_errors=[(e.at, e.message) for e in metrics.recent_errors],
        upstream_healthy=not app[PAGES].upstream_unreachable(),
        disk_full=await _disk_full(app),
        memory_held=metrics.memory_held(),
        memory_budget=app[CONFIG].memory_budget,
        rules=app[PAGES].rules.describe()
        + [
            f"index {name}: {line}"
            for name, sub in app[NAMED_INDEXES].items()
            for line in sub[PAGES].rules.describe()
        ],
        shared_cache=shared_cache_state(app) or "",
        connects=(
            {o: int(metrics.total(metrics.connects, outcome=o)) for o in CONNECT_OUTCOMES}
            if app[CONFIG].transparent
            else None
        ),
        started_at=app[STARTED_AT],
        links={name: str(app.router[name].url_for()) for name in ("metrics", "simple", "health")},
        hour=metrics.history.series(60),
        day=metrics.history.series(1440, per_bin=10),
        named_indexes=[
            (
                name,
                absolute_url(request, sub.router["simple"].url_for()),
                sub[CONFIG].public_upstream,
            )
            for name, sub in app[NAMED_INDEXES].items()
        ],
    )
    return web.Response(text=render_status(snapshot), content_type="text/html")


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: the cache can be written and has room, and the upstream answers or we
    serve stale. A full disk is 503: the proxy still answers, uncached, but a load balancer
    should prefer an instance that caches. A degraded shared tier is reported but stays
    200: the node still serves from its own cache and the upstream."""
    writable = await request.app[STORE].writable()
    disk_full = await _disk_full(request.app)
    upstream_ok = not request.app[PAGES].upstream_unreachable()
    body: dict[str, object] = {
        "cache_writable": writable,
        "disk_full": disk_full,
        "upstream_reachable": upstream_ok,
    }
    shared = shared_cache_state(request.app)
    if shared is not None:
        body["shared_cache"] = shared
    return web.json_response(body, status=200 if writable and not disk_full else 503)


def add_ops_routes(app: web.Application) -> None:
    app[METRICS] = Metrics()
    app[STARTED_AT] = time.time()
    app.middlewares.append(record_metrics)
    app.router.add_get("/", status_page, name="status")
    app.router.add_get("/metrics", metrics_endpoint, name="metrics")
    app.router.add_get("/health", health, name="health")
    app.router.add_get("/ready", ready, name="ready")

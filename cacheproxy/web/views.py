"""HTTP handlers: parse and check the request, call the page or file service, shape the answer."""

from __future__ import annotations

import asyncio
import gzip
import hashlib

from aiohttp import web
from yarl import URL

from cacheproxy.cache import policy
from cacheproxy.cache.files import CACHE_OUTCOME, FileServer
from cacheproxy.cache.pages import PageResult, PageService, UpstreamRefused
from cacheproxy.cache.rendered import RenderedPage, RenderedPages, render_variants
from cacheproxy.cache.upstream import UpstreamError
from cacheproxy.config import Config
from cacheproxy.simple.names import InvalidName, check_filename, normalize_project
from cacheproxy.simple.negotiation import JSON_V1, SUPPORTED, choose_content_type
from cacheproxy.simple.page import (
    render_html,
    render_json,
    render_project_list,
    with_file_facts,
)
from cacheproxy.store.local import Store

PAGE_VARY = "Accept, Accept-Encoding"
_GZIP_MIN_BYTES = 1024

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
PAGES = web.AppKey("pages", PageService)
FILES = web.AppKey("files", FileServer)
RENDERED = web.AppKey("rendered", RenderedPages)
# Where this app's /simple/ tree is mounted: "" for the main index, /index/<name> otherwise.
INDEX_PREFIX = web.AppKey("index_prefix", str)
# The sub-application of each named index, by name (the main index is the root app itself).
NAMED_INDEXES = web.AppKey("named_indexes", dict[str, web.Application])


def _project_or_400(raw: str) -> str:
    try:
        return normalize_project(raw)
    except InvalidName as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None


def _redirect_if_not_normalized(request: web.Request, raw: str, project: str, rest: str) -> None:
    if raw != project:
        prefix = request.app[INDEX_PREFIX]
        location = URL.build(
            path=f"{prefix}/simple/{project}/{rest}", query_string=request.query_string
        )
        raise web.HTTPMovedPermanently(location=str(location))


def _negotiate(request: web.Request) -> str:
    content_type = choose_content_type(request.headers.get("Accept"), request.query.get("format"))
    if content_type is None:
        raise web.HTTPNotAcceptable(text=f"this index serves only: {', '.join(SUPPORTED)}\n")
    return content_type


def _accepts_gzip(request: web.Request) -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "").lower()


def _etag_matches(request: web.Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in candidates or "*" in candidates


def _encode(body: bytes, compress: bool) -> tuple[str, bytes | None]:
    etag = '"' + hashlib.sha256(body).hexdigest()[:40] + '"'
    return etag, gzip.compress(body, 6) if compress else None


async def page_response(
    request: web.Request, body: bytes, content_type: str, max_age: int, **headers: str
) -> web.Response:
    """A page with a strong ETag, 304 on a match, gzip when asked; hashing and compressing
    large pages runs off the event loop."""
    compress = _accepts_gzip(request) and len(body) >= _GZIP_MIN_BYTES
    etag, gzipped = await asyncio.to_thread(_encode, body, compress)
    common = {
        "ETag": etag,
        "Cache-Control": f"max-age={max_age}, public",
        "Vary": PAGE_VARY,
        **headers,
    }
    if _etag_matches(request, etag):
        return web.Response(status=304, headers=common)
    response = web.Response(body=gzipped or body, headers=common)
    response.headers["Content-Type"] = content_type
    if gzipped is not None:
        response.headers["Content-Encoding"] = "gzip"
    return response


async def project_page(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["project"]
    project = _project_or_400(raw)
    _redirect_if_not_normalized(request, raw, project, "")
    content_type = _negotiate(request)
    config = request.app[CONFIG]
    pages, store, rendered = request.app[PAGES], request.app[STORE], request.app[RENDERED]
    now = pages.clock()
    hot = rendered.get(project, content_type, store.page_version(project))
    if hot is not None and policy.page_action(
        hot.head, now, page_ttl=config.page_ttl, negative_ttl=config.negative_ttl,
        offline=config.offline,
    ) is policy.PageAction.SERVE:  # fmt: skip
        request[CACHE_OUTCOME] = "hit"
        max_age = policy.page_max_age(hot.head, now, config.page_ttl, config.negative_ttl)
        return _rendered_response(request, hot, content_type, max_age)
    try:
        # One render per page at a time: concurrent cold clients share it (and its memory).
        fresh, result = await rendered.flights.run(
            (project, content_type),
            lambda: _render_page(pages, store, rendered, project, content_type),
        )
    except UpstreamRefused as exc:
        # Passed on so the user sees why; never cached, credentials may be fixed any time.
        raise _refused(exc) from None
    except UpstreamError as exc:
        raise _upstream_failure(exc) from None
    if result is None:
        request[CACHE_OUTCOME] = "offline"
        raise web.HTTPNotFound(text=f"{project} is not cached and the proxy is offline\n")
    request[CACHE_OUTCOME] = result.outcome
    max_age = policy.page_max_age(result.entry, pages.clock(), config.page_ttl, config.negative_ttl)
    if fresh is None:
        raise web.HTTPNotFound(
            text=f"no project named {project}\n",
            headers={"Cache-Control": f"max-age={max_age}, public"},
        )
    extra = {"Warning": f'110 cacheproxy "stale: {result.warning}"'} if result.warning else {}
    return _rendered_response(request, fresh, content_type, max_age, **extra)


async def _render_page(
    pages: PageService, store: Store, rendered: RenderedPages, project: str, content_type: str
) -> tuple[RenderedPage | None, PageResult | None]:
    result = await pages.get(project)
    if result is None or result.entry.page is None:
        return None, result
    # The version is read before the facts, so facts learned meanwhile make it out of date.
    version = store.page_version(project)
    page = with_file_facts(result.entry.page, await store.file_facts(project))
    render = render_json if content_type == JSON_V1 else render_html
    fresh = await asyncio.to_thread(lambda: render_variants(result.entry, version, render(page)))
    if not result.warning:
        rendered.put(project, content_type, fresh)
    return fresh, result


def _rendered_response(
    request: web.Request, page: RenderedPage, content_type: str, max_age: int, **headers: str
) -> web.Response:
    common = {
        "ETag": page.etag,
        "Cache-Control": f"max-age={max_age}, public",
        "Vary": PAGE_VARY,
        **headers,
    }
    if _etag_matches(request, page.etag):
        return web.Response(status=304, headers=common)
    compressed = page.gzipped is not None and _accepts_gzip(request)
    response = web.Response(body=page.gzipped if compressed else page.body, headers=common)
    response.headers["Content-Type"] = content_type
    if compressed:
        response.headers["Content-Encoding"] = "gzip"
    return response


def _refused(exc: UpstreamRefused) -> web.HTTPException:
    error = web.HTTPForbidden if exc.status == 403 else web.HTTPUnauthorized
    return error(text=f"{exc}; check the proxy's upstream credentials\n")


def _upstream_failure(exc: UpstreamError) -> web.HTTPException:
    if exc.timeout:
        return web.HTTPGatewayTimeout(text=f"{exc}\n")
    return web.HTTPBadGateway(text=f"{exc}\n")


async def project_file(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["project"]
    project = _project_or_400(raw)
    try:
        filename = check_filename(request.match_info["filename"])
    except InvalidName as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    _redirect_if_not_normalized(request, raw, project, filename)
    try:
        return await request.app[FILES].serve(request, project, filename)
    except UpstreamRefused as exc:
        raise _refused(exc) from None
    except UpstreamError as exc:
        raise _upstream_failure(exc) from None


async def project_without_slash(request: web.Request) -> web.StreamResponse:
    project = _project_or_400(request.match_info["project"])
    prefix = request.app[INDEX_PREFIX]
    location = URL.build(path=f"{prefix}/simple/{project}/", query_string=request.query_string)
    raise web.HTTPMovedPermanently(location=str(location))


async def simple_root(request: web.Request) -> web.StreamResponse:
    """Only what this cache holds: the upstream's full list is huge and no installer needs it."""
    content_type = _negotiate(request)
    projects = await request.app[STORE].projects()
    body = render_project_list(projects, content_type == JSON_V1)
    return await page_response(request, body, content_type, 60)


async def simple_without_slash(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently(location=f"{request.app[INDEX_PREFIX]}/simple/")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/simple", simple_without_slash)
    app.router.add_get("/simple/", simple_root)
    app.router.add_get("/simple/{project}", project_without_slash)
    app.router.add_get("/simple/{project}/", project_page)
    app.router.add_get("/simple/{project}/{filename}", project_file)

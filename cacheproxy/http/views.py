"""The Simple API's views: check the request, ask the page or file service, send its answer."""

from __future__ import annotations

import asyncio

from aiohttp import web
from yarl import URL

from cacheproxy.errors import InvalidName, UpstreamError, UpstreamRefused
from cacheproxy.files.service import FileRequest
from cacheproxy.http.file_responses import refusal, respond
from cacheproxy.http.keys import CACHE_OUTCOME, CONFIG, FILES, LOOKAHEAD, PAGES, STORE
from cacheproxy.ops import runtime
from cacheproxy.protocol.names import check_filename, normalize_project
from cacheproxy.protocol.negotiation import JSON_V1, SUPPORTED, choose_content_type
from cacheproxy.protocol.page import METADATA_SUFFIX
from cacheproxy.protocol.render import Rendered, render_project_list, with_variants

PAGE_VARY = "Accept, Accept-Encoding"
_ROOT_MAX_AGE = 60


def _project_or_400(raw: str) -> str:
    try:
        return normalize_project(raw)
    except InvalidName as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None


def project_url(request: web.Request, project: str, filename: str = "") -> URL:
    """Where a project's page (or one of its files) lives in this request's index, keeping
    the query string."""
    routes = request.app.router
    if filename:
        url = routes["file"].url_for(project=project, filename=filename)
    else:
        url = routes["project"].url_for(project=project)
    return url.with_query(request.query_string)


def absolute_url(request: web.Request, url: URL) -> str:
    """One of this proxy's URLs (from url_for) made absolute, for people and documents to
    copy. The Host header is the client's to choose: a configured public URL is preferred."""
    base = request.app[CONFIG].public_url or str(request.url.origin())
    return base.rstrip("/") + str(url)


def _redirect_if_not_normalized(request: web.Request, raw: str, project: str, rest: str) -> None:
    if raw != project:
        raise web.HTTPMovedPermanently(location=project_url(request, project, rest))


def _negotiate(request: web.Request) -> str:
    content_type = choose_content_type(request.headers.get("Accept"), request.query.get("format"))
    if content_type is None:
        raise web.HTTPNotAcceptable(text=f"this index serves only: {', '.join(SUPPORTED)}\n")
    return content_type


def _etag_matches(request: web.Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in candidates or "*" in candidates


async def page_response(
    request: web.Request, page: Rendered, content_type: str, max_age: int, **headers: str
) -> web.Response:
    """A rendered page: 304 on a matching ETag, gzip when the client takes it."""
    common = {
        "ETag": page.etag,
        "Cache-Control": f"max-age={max_age}, public",
        "Vary": PAGE_VARY,
        **headers,
    }
    if _etag_matches(request, page.etag):
        return web.Response(status=304, headers=common)
    accepts_gzip = "gzip" in request.headers.get("Accept-Encoding", "").lower()
    compressed = page.gzipped is not None and accepts_gzip
    body = page.gzipped if compressed else page.held_body
    if body is None:  # held only gzipped, for a client that does not take gzip
        body = await asyncio.to_thread(lambda: page.body)
    sent_apart = len(body) >= runtime.SENT_APART_BYTES
    response = web.Response(body=runtime.SentApart(body) if sent_apart else body, headers=common)
    response.headers["Content-Type"] = content_type
    if compressed:
        response.headers["Content-Encoding"] = "gzip"
    return response


def _upstream_failure(exc: UpstreamError) -> web.HTTPException:
    if isinstance(exc, UpstreamRefused):
        error = web.HTTPForbidden if exc.status == 403 else web.HTTPUnauthorized
        return error(text=f"{exc}; check the proxy's upstream credentials\n")
    if exc.timeout:
        return web.HTTPGatewayTimeout(text=f"{exc}\n")
    return web.HTTPBadGateway(text=f"{exc}\n")


async def project_page(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["project"]
    project = _project_or_400(raw)
    _redirect_if_not_normalized(request, raw, project, "")
    return await serve_page(request, request.app, project)


async def serve_page(
    request: web.Request, index: web.Application, project: str, *, upstream_urls: bool = False
) -> web.StreamResponse:
    """A project's page from the index whose services index (an app) holds; upstream_urls:
    with the upstream's file URLs (the transparent face)."""
    content_type = _negotiate(request)
    try:
        answer = await index[PAGES].answer(project, content_type, upstream_urls=upstream_urls)
    except UpstreamError as exc:
        raise _upstream_failure(exc) from None
    request[CACHE_OUTCOME] = answer.outcome
    if answer.refused:
        raise refusal(403, answer.refused)
    if answer.outcome == "offline":
        raise web.HTTPNotFound(text=f"{project} is not cached and the proxy is offline\n")
    if answer.page is None:
        raise web.HTTPNotFound(
            text=f"no project named {project}\n",
            headers={"Cache-Control": f"max-age={answer.max_age}, public"},
        )
    user_agent = request.headers.get("User-Agent")
    index[LOOKAHEAD].page_served(project, content_type, user_agent, answer.outcome)
    extra = {"Warning": f'110 cacheproxy "stale: {answer.warning}"'} if answer.warning else {}
    return await page_response(request, answer.page.rendered, content_type, answer.max_age, **extra)


async def project_file(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["project"]
    project = _project_or_400(raw)
    try:
        filename = check_filename(request.match_info["filename"])
    except InvalidName as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    _redirect_if_not_normalized(request, raw, project, filename)
    return await serve_file(request, request.app, project, filename)


async def serve_file(
    request: web.Request, index: web.Application, project: str, filename: str
) -> web.StreamResponse:
    """A file from the index whose services index (an app) holds."""
    asked = FileRequest(request.method, request.headers)
    if filename.endswith(".whl" + METADATA_SUFFIX):
        wheel = filename.removesuffix(METADATA_SUFFIX)
        index[LOOKAHEAD].metadata_asked(project, wheel, request.headers.get("User-Agent"))
    try:
        answer = await index[FILES].answer(project, filename, asked)
        return await respond(request, answer)
    except UpstreamError as exc:
        raise _upstream_failure(exc) from None


async def project_without_slash(request: web.Request) -> web.StreamResponse:
    project = _project_or_400(request.match_info["project"])
    raise web.HTTPMovedPermanently(location=project_url(request, project))


async def simple_root(request: web.Request) -> web.StreamResponse:
    return await serve_root(request, request.app)


async def serve_root(request: web.Request, index: web.Application) -> web.StreamResponse:
    """Only what this cache holds: the upstream's full list is huge and no installer needs it."""
    content_type = _negotiate(request)
    projects = await index[STORE].projects()
    body = render_project_list(projects, content_type == JSON_V1)
    rendered = await asyncio.to_thread(with_variants, body)
    return await page_response(request, rendered, content_type, _ROOT_MAX_AGE)


async def simple_without_slash(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently(location=request.app.router["simple"].url_for())


def add_routes(app: web.Application) -> None:
    """The Simple API's routes, by name: "simple", "project" and "file" are the ones to
    make URLs with (url_for adds a named index's /index/NAME prefix)."""
    app.router.add_get("/simple", simple_without_slash, name="simple-without-slash")
    app.router.add_get("/simple/", simple_root, name="simple")
    app.router.add_get("/simple/{project}", project_without_slash, name="project-without-slash")
    app.router.add_get("/simple/{project}/", project_page, name="project")
    app.router.add_get("/simple/{project}/{filename}", project_file, name="file")

"""The PyPI JSON API's views: /pypi/PROJECT/json and /pypi/PROJECT/VERSION/json.

Routed at /pypi/ (what renovate and people type), at /simple/pypi/ (what clients derive from
an index URL ending in /simple/, urljoin(index, "pypi")) and at /PROJECT/json (pip-tools strips
"simple/" from the index URL and asks for PROJECT/json beside it); each named index has the
same routes under /index/NAME/.
"""

from __future__ import annotations

from aiohttp import web

from cacheproxy.errors import InvalidName, UpstreamError
from cacheproxy.http.file_responses import refusal
from cacheproxy.http.keys import CACHE_OUTCOME, JSON_API
from cacheproxy.http.views import _upstream_failure, absolute_url, page_response
from cacheproxy.jsonapi.document import check_release
from cacheproxy.jsonapi.service import JsonApiService
from cacheproxy.protocol.names import normalize_project

JSON_TYPE = "application/json"
# By name: each begins with "json-api", which the metrics middleware counts them by.
ROUTES = {
    "json-api": "/pypi/{project}/json",
    "json-api-release": "/pypi/{project}/{release}/json",
    "json-api-beside-simple": "/simple/pypi/{project}/json",
    "json-api-beside-simple-release": "/simple/pypi/{project}/{release}/json",
    # Not /PROJECT/VERSION/json at the root: it would shadow too much.
    "json-api-at-root": "/{project}/json",
}


def files_base(request: web.Request) -> str:
    """The absolute URL this request's index serves files under, ending in a slash."""
    return absolute_url(request, request.app.router["simple"].url_for())


async def document(request: web.Request) -> web.StreamResponse:
    release = request.match_info.get("release", "")
    try:
        project = normalize_project(request.match_info["project"])
        if release:
            check_release(release)
    except InvalidName as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    return await serve_document(request, request.app, project, release, files_base(request))


async def serve_document(
    request: web.Request,
    index: web.Application,
    project: str,
    release: str,
    files_base: str | None,
) -> web.StreamResponse:
    """A JSON API document from the index whose services index (an app) holds; files_base
    None keeps the upstream's file URLs (the transparent face)."""
    service: JsonApiService = index[JSON_API]
    try:
        answer = await service.answer(project, release, files_base)
    except UpstreamError as exc:
        raise _upstream_failure(exc) from None
    request[CACHE_OUTCOME] = answer.outcome
    if answer.refused is not None:
        raise refusal(403, answer.refused)
    what = f"{project} {release}" if release else project
    if answer.outcome == "offline":
        raise web.HTTPNotFound(text=f"{what} is not cached and the proxy is offline\n")
    if answer.rendered is None:
        reason = "the upstream has no JSON API" if answer.outcome == "absent" else "none upstream"
        raise web.HTTPNotFound(
            text=f"no JSON API document for {what}: {reason}\n",
            headers={"Cache-Control": f"max-age={answer.max_age}, public"},
        )
    extra = {"Warning": f'110 cacheproxy "stale: {answer.warning}"'} if answer.warning else {}
    return await page_response(request, answer.rendered, JSON_TYPE, answer.max_age, **extra)


def add_json_api_routes(app: web.Application) -> None:
    for name, path in ROUTES.items():
        app.router.add_get(path, document, name=name)

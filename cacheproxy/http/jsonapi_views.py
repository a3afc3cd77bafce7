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
from cacheproxy.http.keys import CACHE_OUTCOME, CONFIG, INDEX_PREFIX, JSON_API
from cacheproxy.http.views import _upstream_failure, page_response
from cacheproxy.jsonapi.document import check_release
from cacheproxy.jsonapi.service import JsonApiService
from cacheproxy.protocol.names import normalize_project

JSON_TYPE = "application/json"
_PREFIXES = ("/pypi", "/simple/pypi", "")


def files_base(request: web.Request) -> str:
    """The absolute URL this request's index serves files under, ending in a slash. The Host
    header is the client's to choose: a configured public URL is preferred."""
    base = request.app[CONFIG].public_url or str(request.url.with_path("/").with_query(None))
    return f"{base.rstrip('/')}{request.app[INDEX_PREFIX]}/simple/"


async def document(request: web.Request) -> web.StreamResponse:
    release = request.match_info.get("release", "")
    try:
        project = normalize_project(request.match_info["project"])
        if release:
            check_release(release)
    except InvalidName as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    service: JsonApiService = request.app[JSON_API]
    try:
        answer = await service.answer(project, release, files_base(request))
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
    for prefix in _PREFIXES:
        app.router.add_get(prefix + "/{project}/json", document)
        if prefix:  # /PROJECT/VERSION/json at the root would shadow too much
            app.router.add_get(prefix + "/{project}/{release}/json", document)

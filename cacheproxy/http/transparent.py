"""The transparent face: requests that arrive on an intercepted connection to a package host
(CONNECT host:443, TLS ended under the proxy's own CA by http/connect.py), answered by the
same services as the index face, so a file fetched through either face is a hit for the
other.

The connection's target host (and port) picks the index: the index whose upstream is on that
host (the main index first, then each named one), or for a file host the main index. On an
index's own host, its upstream's Simple API paths are pages and its JSON API paths are
documents, both with the upstream's own file URLs (nothing they hand a client names the
proxy, so a lock made through this face stays portable). Every other path is a file named by
its URL: the project is read off the file name, and the file is served only when the index's
page lists that file at exactly that URL (it is then downloaded, hash-checked and stored as
through the index face); anything else is a 404 that says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from yarl import URL

from cacheproxy.config import HostPort
from cacheproxy.errors import InvalidName, UpstreamError
from cacheproxy.http.connect import connect_target
from cacheproxy.http.file_responses import refusal
from cacheproxy.http.jsonapi_views import serve_document
from cacheproxy.http.keys import CACHE_OUTCOME, CONFIG, METRICS, NAMED_INDEXES, PAGES
from cacheproxy.http.views import (
    _project_or_400,
    _upstream_failure,
    serve_file,
    serve_page,
    serve_root,
)
from cacheproxy.jsonapi.document import check_release
from cacheproxy.ops import runtime
from cacheproxy.protocol.names import check_filename
from cacheproxy.protocol.page import METADATA_SUFFIX, PROVENANCE_SUFFIX

# What each request turned out to be (page, file, json-api), for the metrics.
_KIND = web.RequestKey("transparent_kind", str)
# The app whose services (and whose named indexes' services) this face answers with.
ROOT = web.AppKey("root", web.Application)


Target = Callable[[web.BaseRequest], tuple[str, int]]


def _target(request: web.Request) -> tuple[str, int]:
    """The host and port this request's connection was made to: the one place that decides it
    (the CONNECT front's, which checked the TLS server name against the CONNECT host)."""
    try:
        return request.app[TARGET](request)
    except LookupError:
        raise web.HTTPBadRequest(text="no CONNECT target for this connection\n") from None


def _host_port(url: URL) -> tuple[str, int]:
    return (url.host or "").lower(), url.port or 0


@dataclass(frozen=True)
class Index:
    """One index as this face sees it: the app holding its services (the root for the main
    index, a named index's sub-app), and where its upstream's pages and documents live."""

    app: web.Application
    upstream: URL  # the Simple API, without credentials, ending in a slash
    json_api: URL | None  # the JSON API base, ending in a slash; None without one

    @classmethod
    def of(cls, app: web.Application) -> Index:
        config = app[CONFIG]
        return cls(app, config.upstream_url, config.json_api_base)


@dataclass(frozen=True)
class Route:
    """What a request is: kind "root", "page", "page-without-slash", "json-api", "file", with
    the index that answers it and what the path names (a project, a release)."""

    kind: str
    index: Index
    project: str = ""
    release: str = ""


@dataclass(frozen=True)
class Routing:
    """Which index answers a request to a host, and what its path names there."""

    indexes: tuple[Index, ...]  # the main index first
    package_hosts: tuple[HostPort, ...]

    @classmethod
    def of(cls, root: web.Application) -> Routing:
        apps = [root, *root[NAMED_INDEXES].values()]
        return cls(tuple(Index.of(app) for app in apps), root[CONFIG].package_hosts())

    def is_package_host(self, host: str, port: int) -> bool:
        if any(known.matches(host, port) for known in self.package_hosts):
            return True
        own = [index.upstream for index in self.indexes]
        own += [index.json_api for index in self.indexes if index.json_api is not None]
        return (host, port) in map(_host_port, own)

    def route(self, host: str, port: int, path: str) -> Route | None:
        """The request's route (path: decoded); None for a host that is no package host."""
        target = (host, port)
        # Pages first, by the longest upstream path: two indexes may share a host.
        on_host = [index for index in self.indexes if _host_port(index.upstream) == target]
        for index in sorted(on_host, key=lambda index: -len(index.upstream.path)):
            route = _page_route(index, path)
            if route is not None:
                return route
        for index in self.indexes:
            base = index.json_api
            if base is not None and _host_port(base) == target and path.startswith(base.path):
                route = _json_route(index, path[len(base.path) :])
                if route is not None:
                    return route
        if on_host:
            return Route("file", on_host[0])
        if self.is_package_host(host, port):
            return Route("file", self.indexes[0])
        return None


ROUTING = web.AppKey("routing", Routing)
# What tells a request its CONNECT target (connect.connect_target; a test gives its own).
TARGET: web.AppKey[Target] = web.AppKey("target")


def _page_route(index: Index, path: str) -> Route | None:
    base = index.upstream.path
    if not path.startswith(base):
        return None
    rest = path[len(base) :]
    if not rest:
        return Route("root", index)
    name, slash, more = rest.partition("/")
    if more:  # deeper: a file kept under its page, as some indexes do
        return None
    if slash:
        return Route("page", index, name)
    if _distribution_project(rest) is not None:
        return None  # a file at the index's root
    return Route("page-without-slash", index, name)


def _json_route(index: Index, rest: str) -> Route | None:
    parts = rest.split("/")
    if len(parts) == 2 and parts[1] == "json":
        return Route("json-api", index, parts[0])
    if len(parts) == 3 and parts[2] == "json":
        return Route("json-api", index, parts[0], parts[1])
    return None


def _distribution_project(filename: str) -> str | None:
    """The project a file belongs to, read off its name (a wheel's, an sdist's, or their
    .metadata or .provenance); None when it names no distribution."""
    base = filename.removesuffix(METADATA_SUFFIX).removesuffix(PROVENANCE_SUFFIX)
    try:
        if base.endswith(".whl"):
            return str(parse_wheel_filename(base)[0])
        return str(parse_sdist_filename(base)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def same_origin(listed: str, asked: URL) -> bool:
    """Whether a URL an index lists is on the host and port asked (whatever its scheme)."""
    try:
        url = URL(listed)
    except ValueError:
        return False
    return ((url.host or "").lower(), url.port) == ((asked.host or "").lower(), asked.port)


def same_url(listed: str, asked: URL) -> bool:
    """Whether a URL an index lists names the file asked for: scheme, host, port and path."""
    try:
        url = URL(listed)
    except ValueError:
        return False

    def parts(url: URL) -> tuple:
        return url.scheme.lower(), (url.host or "").lower(), url.port, url.path

    return parts(url) == parts(asked)


async def _listing_problem(
    index: Index, project: str, filename: str, asked: URL
) -> web.HTTPException | None:
    """Why the file at this URL is not served, or None when the index lists it there: a
    .metadata file is where its distribution is, plus the suffix."""
    pages = index.app[PAGES]
    listed, suffix = filename, ""
    if filename.endswith(METADATA_SUFFIX):
        listed, suffix = filename.removesuffix(METADATA_SUFFIX), METADATA_SUFFIX
    try:
        source = await pages.find_file(project, listed)
    except UpstreamError as exc:
        return _upstream_failure(exc)
    if source is None:
        gone = await pages.taken_down(project, filename)
        if gone is not None:
            return refusal(gone.status, gone.reason)
        return web.HTTPNotFound(text=f"the index lists no such file: {project}'s {filename}\n")
    listed_url = source.url + suffix
    if same_origin(listed_url, asked) and not same_url(listed_url, asked):
        return web.HTTPNotFound(text=f"the index lists {project}'s {filename} at another URL\n")
    # On another package host (a lock made against the public index, the upstream a private
    # mirror), the file is the one the index lists under that name: its bytes are checked
    # against the index's hash before they are stored, and the client checks its lock's.
    return None


async def _file(request: web.Request, index: Index, host: str, port: int) -> web.StreamResponse:
    request[_KIND] = "file"
    raw_path = request.rel_url.raw_path
    try:
        filename = check_filename(unquote(raw_path.rpartition("/")[2]))
    except InvalidName as exc:
        raise web.HTTPNotFound(text=f"not a distribution file name: {exc}\n") from None
    project = _distribution_project(filename)
    if project is None:
        raise web.HTTPNotFound(text=f"not a distribution file name: {filename[:100]!r}\n")
    asked = URL.build(scheme=request.scheme, host=host, port=port, path=raw_path, encoded=True)
    # A project the rules refuse is refused as on the index face, without a look at its page.
    if index.app[PAGES].visibility.project_refusal(project) is None:
        problem = await _listing_problem(index, project, filename, asked)
        if problem is not None:
            raise problem
    return await serve_file(request, index.app, project, filename)


def _redirect_to_normalized(request: web.Request, index: Index, raw: str, slash: bool) -> str:
    project = _project_or_400(raw)
    if raw != project or not slash:
        location = URL(index.upstream.path + project + "/").with_query(request.query_string)
        raise web.HTTPMovedPermanently(location=str(location))
    return project


async def answer(request: web.Request) -> web.StreamResponse:
    """Every request of this face: routed by its connection's target, then its path."""
    host, port = _target(request)
    routing: Routing = request.app[ROUTING]
    route = routing.route(host, port, request.path)
    if route is None:
        raise web.HTTPNotFound(text=f"{host}:{port} is not a package host of this proxy\n")
    index = route.index
    if route.kind == "file":
        return await _file(request, index, host, port)
    request[_KIND] = "json-api" if route.kind == "json-api" else "page"
    if route.kind == "root":
        return await serve_root(request, index.app)
    if route.kind == "json-api":
        try:
            project = _project_or_400(route.project)
            release = check_release(route.release) if route.release else ""
        except InvalidName as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        return await serve_document(request, index.app, project, release, None)
    project = _redirect_to_normalized(request, index, route.project, route.kind == "page")
    return await serve_page(request, index.app, project, upstream_urls=True)


@web.middleware
async def _record_metrics(request: web.Request, handler) -> web.StreamResponse:
    """Requests and cache outcomes counted as on the index face, and X-Cache on answers."""
    runtime.limit_socket_reads(request.transport)  # as on the index face (ops/runtime.py)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _count(request, exc)
        raise
    _count(request, response)
    return response


def _count(request: web.Request, response: web.StreamResponse) -> None:
    metrics = request.app[ROOT][METRICS]
    kind = request.get(_KIND)
    metrics.requests.labels(f"transparent {kind or 'other'}", str(response.status)).inc()
    outcome = request.get(CACHE_OUTCOME)
    if not outcome or kind is None:
        return
    if not response.prepared:
        response.headers["X-Cache"] = outcome
    metrics.outcomes.labels(kind, outcome).inc()


def create_transparent_app(
    root: web.Application, target: Target = connect_target
) -> web.Application:
    """The app that answers decrypted requests to the package hosts, with the services of
    root (the app create_app made; they are opened by its cleanup_ctx, never here). target
    tells each request's CONNECT host and port (a test serving the app alone gives its own)."""
    app = web.Application(client_max_size=1024)
    app[ROOT] = root
    app[TARGET] = target
    app[ROUTING] = Routing.of(root)
    app.middlewares.append(_record_metrics)
    # Only GET and HEAD (the HEAD route comes with it): no request body is ever read.
    app.router.add_get("/{path:.*}", answer, name="transparent")
    return app

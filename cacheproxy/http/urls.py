"""The one place that builds the proxy's own URLs: /simple/ and /index/NAME/simple/ trees."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web
from yarl import URL

from cacheproxy.http.keys import INDEX_PREFIX


def index_path(name: str | None = None) -> str:
    """The path of an index's /simple/ tree: the main index for None."""
    return f"/index/{quote(name, safe='')}/simple/" if name else "/simple/"


def simple_url(request: web.Request) -> str:
    return f"{request.app[INDEX_PREFIX]}/simple/"


def project_url(request: web.Request, project: str, rest: str = "") -> str:
    """Where a project's page (or one of its files) lives in this request's index, keeping
    the query string."""
    path = f"{request.app[INDEX_PREFIX]}/simple/{project}/{rest}"
    return str(URL.build(path=path, query_string=request.query_string))


def absolute_index_url(base: str, name: str | None = None) -> str:
    """An index URL for people to copy: base is the proxy's root URL (scheme and host)."""
    return base.rstrip("/") + index_path(name)

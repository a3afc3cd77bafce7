"""Placeholder for the transparent face's app: every request on an intercepted connection is
answered 501 with the CONNECT target, so the front door (http/connect.py) can be tried end to
end. The real app answers with the same services as the index face."""

from __future__ import annotations

from aiohttp import web

from cacheproxy.http.connect import connect_target


async def _not_built(request: web.Request) -> web.Response:
    host, port = connect_target(request)
    return web.Response(
        status=501,
        text=f"transparent face not built yet: {request.method} {host}:{port} {request.path_qs}\n",
    )


def create_transparent_app(root: web.Application) -> web.Application:
    """The app that answers requests arriving on intercepted CONNECTs."""
    app = web.Application(client_max_size=1024)
    app.router.add_route("*", "/{tail:.*}", _not_built)
    return app

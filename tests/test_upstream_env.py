"""Proxy variables and netrc credentials for the upstream, read once as the proxy starts."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from yarl import URL

from cacheproxy.protocol.negotiation import JSON_V1

ALPHA = "tinyalpha-2.0-py3-none-any.whl"


async def fetch(url, **headers):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as resp:
            return resp.status, await resp.read()


async def start_forward_proxy(aiohttp_server, seen: list[str]):
    """An HTTP forward proxy: relays each absolute-form request to the host it names."""

    async def relay(request: web.Request) -> web.Response:
        target = URL(request.raw_path)  # absolute-form: the proxy is asked for a whole URL
        if not target.is_absolute():
            return web.Response(status=400, text="not a proxy request")
        seen.append(target.path)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "range", "accept")
        }
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(target, headers=headers) as resp:
                body = await resp.read()
                kept = {
                    k: v
                    for k, v in resp.headers.items()
                    if k.lower() in ("content-type", "content-encoding", "etag")
                }
                return web.Response(status=resp.status, body=body, headers=kept)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", relay)
    return await aiohttp_server(app)


def netrc_for_localhost(tmp_path, monkeypatch, password: str):
    """A netrc file, named by NETRC, with this password for the test upstream's host."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1\nlogin ci\npassword {password}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def no_proxy_variables(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_upstream_requests_go_through_the_proxy_the_environment_names(
    make_proxy, upstream, aiohttp_server, monkeypatch
):
    no_proxy_variables(monkeypatch)
    seen: list[str] = []
    forward = await start_forward_proxy(aiohttp_server, seen)
    monkeypatch.setenv("HTTP_PROXY", str(forward.make_url("/")))
    proxy = await make_proxy()
    status, page = await fetch(proxy.url + "tinyalpha/", Accept=JSON_V1)
    assert status == 200 and ALPHA.encode() in page
    assert (await fetch(proxy.url + f"tinyalpha/{ALPHA}"))[0] == 200
    assert "/simple/tinyalpha/" in seen and any(path.endswith(ALPHA) for path in seen)


async def test_netrc_is_read_as_the_proxy_starts(make_proxy, upstream, tmp_path, monkeypatch):
    no_proxy_variables(monkeypatch)
    netrc = netrc_for_localhost(tmp_path, monkeypatch, "from-netrc")
    upstream.index.required_auth = ("ci", "from-netrc")
    proxy = await make_proxy()
    netrc.unlink()  # requests find the credentials in memory, not in the file
    status, page = await fetch(proxy.url + "tinyalpha/", Accept=JSON_V1)
    assert status == 200 and b"from-netrc" not in page
    assert (await fetch(proxy.url + f"tinyalpha/{ALPHA}"))[0] == 200


async def test_credentials_in_the_url_win_over_a_netrc_entry_for_the_same_host(
    make_proxy, upstream, tmp_path, monkeypatch
):
    no_proxy_variables(monkeypatch)
    netrc_for_localhost(tmp_path, monkeypatch, "stale")
    upstream.index.required_auth = ("ci", "current")
    proxy = await make_proxy(upstream=upstream.simple_url.replace("http://", "http://ci:current@"))
    status, _ = await fetch(proxy.url + "tinyalpha/", Accept=JSON_V1)
    assert status == 200
    assert (await fetch(proxy.url + f"tinyalpha/{ALPHA}"))[0] == 200

"""Project pages through a real proxy server in front of the local test upstream."""

import gzip
import json
import os

import aiohttp

from cacheproxy.ops.runtime import SENT_APART_BYTES, SOCKET_READ_BYTES
from cacheproxy.protocol.negotiation import HTML_LEGACY, HTML_V1, JSON_V1
from tests.fakes.clock import FakeClock
from tests.fakes.upstream import UpstreamFile

UV_ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, {HTML_LEGACY};q=0.01"


async def get(url, **headers):
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url, headers=headers, allow_redirects=False) as resp:
            return resp.status, resp.headers, await resp.read()


async def test_json_page_has_relative_urls_and_upstream_fields(proxy, upstream):
    status, headers, body = await get(proxy.url + "tinyalpha/", Accept=UV_ACCEPT)
    assert status == 200
    assert headers["Content-Type"] == JSON_V1
    page = json.loads(body)
    assert page["name"] == "tinyalpha"
    by_name = {f["filename"]: f for f in page["files"]}
    wheel = by_name["tinyalpha-2.0-py3-none-any.whl"]
    assert wheel["url"] == "tinyalpha-2.0-py3-none-any.whl"
    assert wheel["requires-python"] == ">=3.8"
    assert len(wheel["hashes"]["sha256"]) == 64
    assert wheel["core-metadata"]["sha256"]
    upstream_text = json.dumps(page)
    assert str(upstream.server.port) not in upstream_text  # no upstream URL leaks to clients


async def test_html_page_when_client_prefers_it(proxy):
    status, headers, body = await get(proxy.url + "tinyalpha/", Accept="text/html")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    text = body.decode()
    assert 'href="tinyalpha-2.0-py3-none-any.whl#sha256=' in text
    assert 'data-requires-python="&gt;=3.8"' in text
    assert "data-core-metadata=" in text


async def test_html_only_upstream_still_serves_json(proxy, upstream):
    upstream.index.mode = "html"
    status, headers, body = await get(proxy.url + "tinyalpha/", Accept=UV_ACCEPT)
    assert status == 200 and headers["Content-Type"] == JSON_V1
    files = {f["filename"] for f in json.loads(body)["files"]}
    assert "tinyalpha-2.0-py3-none-any.whl" in files


async def test_not_normalized_name_redirects(proxy):
    status, headers, _ = await get(proxy.url + "Beta_Helper/?format=" + JSON_V1)
    assert status == 301
    assert headers["Location"] == f"/simple/beta-helper/?format={JSON_V1}"
    status, headers, _ = await get(proxy.url + "tinyalpha")
    assert status == 301 and headers["Location"] == "/simple/tinyalpha/"


async def test_unknown_project_is_404_and_remembered(proxy, upstream):
    for _ in range(3):
        status, _, body = await get(proxy.url + "no-such-project/")
        assert status == 404
    assert b"no-such-project" in body
    assert upstream.index.page_hits("no-such-project") == 1


async def test_406_when_nothing_fits(proxy):
    status, _, body = await get(proxy.url + "tinyalpha/", Accept="image/png")
    assert status == 406
    assert JSON_V1.encode() in body


async def test_bad_names_are_400_with_a_reason(proxy):
    status, _, body = await get(proxy.url + "bad%20name/")
    assert status == 400
    assert b"not a valid project name" in body


async def test_page_is_cached_then_revalidated(make_proxy, upstream):
    clock = FakeClock()
    proxy = await make_proxy(page_ttl=600, clock=clock)
    for _ in range(3):
        assert (await get(proxy.url + "tinyalpha/"))[0] == 200
    assert upstream.index.page_hits("tinyalpha") == 1
    clock.now += 601
    assert (await get(proxy.url + "tinyalpha/"))[0] == 200
    assert upstream.index.page_hits("tinyalpha") == 2
    # the upstream answered 304 to our If-None-Match: the page stays, freshly confirmed
    assert (await get(proxy.url + "tinyalpha/"))[0] == 200
    assert upstream.index.page_hits("tinyalpha") == 2


async def test_stale_page_served_when_upstream_fails(make_proxy, upstream):
    clock = FakeClock()
    proxy = await make_proxy(page_ttl=60, clock=clock)
    _, _, fresh = await get(proxy.url + "tinyalpha/", Accept=JSON_V1)
    clock.now += 3600
    upstream.index.page_status = 503
    status, headers, stale = await get(proxy.url + "tinyalpha/", Accept=JSON_V1)
    assert status == 200
    assert stale == fresh
    assert "stale" in headers["Warning"]


async def test_upstream_error_without_cache_is_502_with_reason(proxy, upstream):
    upstream.index.page_status = 500
    status, _, body = await get(proxy.url + "tinyalpha/")
    assert status == 502
    assert b"upstream answered 500" in body
    assert b"Traceback" not in body


async def test_upstream_down_without_cache_is_502(proxy, upstream):
    await upstream.stop()
    status, _, body = await get(proxy.url + "tinyalpha/")
    assert status == 502
    assert b"cannot connect to upstream" in body


async def test_etag_304_vary_and_gzip(proxy):
    status, headers, body = await get(
        proxy.url + "tinyalpha/", Accept=JSON_V1, **{"Accept-Encoding": "gzip"}
    )
    assert status == 200
    assert headers["Vary"] == "Accept, Accept-Encoding"
    assert headers["Cache-Control"].startswith("max-age=")
    etag = headers["ETag"]
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    assert json.loads(body)["name"] == "tinyalpha"
    status, headers, body = await get(
        proxy.url + "tinyalpha/", Accept=JSON_V1, **{"If-None-Match": etag}
    )
    assert status == 304 and headers["ETag"] == etag and body == b""
    # the HTML form is another representation with its own tag
    _, html_headers, _ = await get(proxy.url + "tinyalpha/", Accept="text/html")
    assert html_headers["ETag"] != etag


async def test_root_lists_only_cached_projects(proxy):
    _, _, body = await get(proxy.url, Accept=JSON_V1)
    assert json.loads(body)["projects"] == []
    await get(proxy.url + "tinyalpha/")
    await get(proxy.url + "no-such-project/")
    _, _, body = await get(proxy.url, Accept=JSON_V1)
    assert json.loads(body)["projects"] == [{"name": "tinyalpha"}]


async def test_only_get_and_head(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.post(proxy.url + "tinyalpha/", data=b"x") as resp:
            assert resp.status == 405
        async with session.head(proxy.url + "tinyalpha/") as resp:
            assert resp.status == 200


async def test_a_large_page_is_sent_whole_however_it_is_asked_for(proxy, upstream):
    for i in range(3000):
        filename = f"largepage-1.{i}-py3-none-any.whl"
        upstream.index.files[filename] = UpstreamFile("largepage", filename, os.urandom(8))
    url = proxy.url + "largepage/"
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(
            url, headers={"Accept": JSON_V1, "Accept-Encoding": "identity"}
        ) as resp:
            assert resp.status == 200 and "Content-Encoding" not in resp.headers
            plain = await resp.read()
            assert int(resp.headers["Content-Length"]) == len(plain)
        async with session.get(url, headers={"Accept": JSON_V1, "Accept-Encoding": "gzip"}) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            zipped = await resp.read()
            assert int(resp.headers["Content-Length"]) == len(zipped)
        async with session.head(
            url, headers={"Accept": JSON_V1, "Accept-Encoding": "gzip"}
        ) as resp:
            assert int(resp.headers["Content-Length"]) == len(zipped)
            assert await resp.read() == b""
    # Written after its headers rather than joined to them (runtime.SENT_APART_BYTES).
    assert len(zipped) >= SENT_APART_BYTES
    assert gzip.decompress(zipped) == plain
    assert len(json.loads(plain)["files"]) == 3000


async def test_client_connections_are_read_in_small_pieces(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url + "tinyalpha/") as resp:
            assert resp.status == 200
        (handler,) = proxy.server.runner.server.connections
        assert handler.transport.max_size == SOCKET_READ_BYTES
        async with session.get(proxy.url + "tinyalpha/") as resp:  # the same connection
            assert resp.status == 200

"""Upstreams that misbehave on purpose: odd file URLs, bodies without framing; and range and
conditional requests answered alike for a stored, a downloading and a relayed file."""

import asyncio
import gzip
import json

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.raw_http import start_unframed_server

ALPHA = "tinyalpha-2.0-py3-none-any.whl"
BIG = "bigpkg-1.0-py3-none-any.whl"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


async def fetch(url, method="GET", **headers):
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.request(method, url, headers=headers) as resp:
            return resp.status, resp.headers, await resp.read()


@pytest.mark.parametrize("bad_url", ["javascript:alert(1)", "file:///etc/passwd", "data:,x"])
async def test_file_urls_that_are_not_http_neither_hang_nor_leak(make_proxy, upstream, bad_url):
    upstream.index.required_auth = ("ci", "token")
    upstream.index.url_overrides[ALPHA] = bad_url
    proxy = await make_proxy(upstream=upstream.simple_url.replace("http://", "http://ci:token@"))

    async def ask(times: int) -> None:
        for _ in range(times):
            for name in (ALPHA, ALPHA + ".metadata"):
                status, _, body = await asyncio.wait_for(fetch(url + name), 10)
                assert status == 404, body

    url = proxy.url + "tinyalpha/"
    await ask(10)  # worker threads and pooled connections open their descriptors once
    before = len(_open_descriptors())
    await ask(30)
    assert len(_open_descriptors()) < before + 10  # a leak would be one per request: 60
    status, _, page = await fetch(proxy.url + "tinyalpha/", **JSON)
    assert status == 200 and ALPHA.encode() not in page and b"tinyalpha-1.0" in page


def _open_descriptors():
    import os

    return os.listdir("/proc/self/fd")


async def test_an_unframed_body_cut_short_is_never_stored(proxy, upstream, wheel_bytes):
    whole = wheel_bytes(BIG)
    server, base = await start_unframed_server(whole[: len(whole) // 2])
    try:
        upstream.index.hashless.add(BIG)
        upstream.index.url_overrides[BIG] = base + BIG
        with pytest.raises(aiohttp.ClientPayloadError):  # cut off, never a clean short file
            await fetch(proxy.url + f"bigpkg/{BIG}")
        status, headers, _ = await fetch(proxy.url + f"bigpkg/{BIG}", method="HEAD")
        assert headers.get("X-Cache") != "hit"
    finally:
        server.close()


async def test_an_unframed_whole_body_is_stored(proxy, upstream, wheel_bytes):
    whole = wheel_bytes(ALPHA)
    server, base = await start_unframed_server(whole)
    try:
        upstream.index.hashless.add(ALPHA)
        upstream.index.url_overrides[ALPHA] = base + ALPHA
        assert (await fetch(proxy.url + f"tinyalpha/{ALPHA}"))[2] == whole
        status, headers, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}")
        assert (status, headers["X-Cache"], body) == (200, "hit", whole)
    finally:
        server.close()


async def _answers(proxy, upstream, state: str, **headers):
    """The status and body for a request on a file that is stored, downloading or relayed."""
    url = proxy.url + f"bigpkg/{BIG}"
    if state == "stored":
        await fetch(url)
        return await fetch(url, **headers)
    upstream.index.chunk_delay = 0.05  # the download is still running when asked
    first = asyncio.ensure_future(fetch(url))
    await asyncio.sleep(0.3)
    try:
        return await fetch(url, **headers)
    finally:
        await first


@pytest.mark.parametrize("state", ["stored", "downloading"])
async def test_range_and_conditions_are_decided_alike(proxy, upstream, wheel_bytes, state):
    whole = wheel_bytes(BIG)
    sha = upstream.index.files[BIG].sha256
    status, headers, body = await _answers(proxy, upstream, state, Range="bytes=-0")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(whole)}"
    status, _, body = await fetch(proxy.url + f"bigpkg/{BIG}", Range="bytes=0-1,5-6")
    assert status == 200 and body == whole  # several ranges: the whole file
    stale = {"Range": "bytes=0-9", "If-Range": '"not-the-etag"'}
    status, _, body = await fetch(proxy.url + f"bigpkg/{BIG}", **stale)
    assert status == 200 and body == whole
    current = {"Range": "bytes=0-9", "If-Range": f'"{sha}"'}
    status, headers, body = await fetch(proxy.url + f"bigpkg/{BIG}", **current)
    assert status == 206 and body == whole[:10] and headers["ETag"] == f'"{sha}"'
    status, _, _ = await fetch(proxy.url + f"bigpkg/{BIG}", **{"If-None-Match": f'"{sha}"'})
    assert status == 304
    status, _, _ = await fetch(proxy.url + f"bigpkg/{BIG}", **{"If-Match": '"other"'})
    assert status == 412


async def test_conditions_on_a_cold_file(proxy, upstream):
    sha = upstream.index.files[ALPHA].sha256
    url = proxy.url + f"tinyalpha/{ALPHA}"
    assert (await fetch(url, **{"If-None-Match": f'"{sha}"'}))[0] == 304
    assert (await fetch(proxy.url + f"bigpkg/{BIG}", **{"If-Match": '"other"'}))[0] == 412
    status, _, body = await fetch(url, **{"If-Match": f'"{sha}"'})
    assert status == 200 and len(body) == len(upstream.index.files[ALPHA].data)


def _gzip_page_upstream(body: bytes, encoding: str = "gzip"):
    async def page(request):
        return web.Response(
            body=body,
            headers={
                "Content-Type": "application/vnd.pypi.simple.v1+json",
                "Content-Encoding": encoding,
            },
        )

    app = web.Application()
    app.router.add_get("/simple/{project}/", page)
    return app


def _json_page(files: int = 3) -> bytes:
    entries = [
        {"filename": f"gz-1.{i}-py3-none-any.whl", "url": f"/f/gz-1.{i}-py3-none-any.whl",
         "hashes": {"sha256": "ab" * 32}}
        for i in range(files)
    ]  # fmt: skip
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "gz", "files": entries}).encode()


@pytest.mark.parametrize("members", [1, 2], ids=["one-member", "two-members"])
async def test_a_gzipped_page_is_read_whole(aiohttp_server, make_proxy, members):
    body = _json_page(400)
    half = len(body) // 2
    sent = (
        gzip.compress(body)
        if members == 1
        else gzip.compress(body[:half]) + gzip.compress(body[half:])
    )
    server = await aiohttp_server(_gzip_page_upstream(sent))
    proxy = await make_proxy(upstream=str(server.make_url("/simple/")))
    status, headers, page = await fetch(proxy.url + "gz/", **JSON, **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(page))["files"]) == 400


@pytest.mark.parametrize(
    "sent, encoding, reason",
    [
        (b"\x1f\x8b\x08\x00not gzip at all", "gzip", b"not valid gzip"),
        (None, "gzip", b"cut short"),
        (b"{}", "br", b"encoding not asked for"),
        (None, "bomb", b"too large"),
    ],
    ids=["garbage", "cut-short", "brotli", "bomb"],
)
async def test_a_page_that_cannot_be_decoded_is_a_502_with_its_reason(
    aiohttp_server, make_proxy, monkeypatch, sent, encoding, reason
):
    from cacheproxy import upstream as upstream_module

    if encoding == "bomb":
        monkeypatch.setattr(upstream_module, "MAX_PAGE_BYTES", 1024 * 1024)
        sent, encoding = gzip.compress(b" " * (2 * 1024 * 1024) + _json_page()), "gzip"
    elif sent is None:
        sent = gzip.compress(_json_page(200))[:-40]
    server = await aiohttp_server(_gzip_page_upstream(sent, encoding))
    proxy = await make_proxy(upstream=str(server.make_url("/simple/")))
    status, _, body = await asyncio.wait_for(fetch(proxy.url + "gz/", **JSON), 20)
    assert status == 502 and reason in body, body

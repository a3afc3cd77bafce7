"""Files through a real proxy: warm from disk, cold streamed, shared, verified."""

import asyncio
import hashlib
import os
import types

import aiohttp
import pytest

from cacheproxy.files import downloads as downloads_module

ALPHA = "tinyalpha-2.0-py3-none-any.whl"
BIG = "bigpkg-1.0-py3-none-any.whl"


async def fetch(url, method="GET", **headers):
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.request(method, url, headers=headers) as resp:
            return resp.status, resp.headers, await resp.read()


async def test_cold_then_warm_file_is_fetched_once(proxy, upstream, wheel_bytes):
    expected = wheel_bytes(ALPHA)
    for _ in range(3):
        status, headers, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}")
        assert status == 200
        assert body == expected
        assert "Content-Encoding" not in headers
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert upstream.index.file_hits(ALPHA) == 1


async def test_warm_file_survives_restart_with_upstream_down(make_proxy, upstream, wheel_bytes):
    first = await make_proxy()
    assert (await fetch(first.url + f"tinyalpha/{ALPHA}"))[0] == 200
    await first.close()
    await upstream.stop()
    second = await make_proxy()
    status, _, body = await fetch(second.url + f"tinyalpha/{ALPHA}")
    assert status == 200 and body == wheel_bytes(ALPHA)


async def test_head_and_range_on_warm_file(proxy, wheel_bytes):
    expected = wheel_bytes(ALPHA)
    await fetch(proxy.url + f"tinyalpha/{ALPHA}")
    status, headers, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}", "HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) == len(expected)
    assert headers["Accept-Ranges"] == "bytes"
    status, headers, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}", Range="bytes=10-19")
    assert status == 206 and body == expected[10:20]
    assert headers["Content-Range"] == f"bytes 10-19/{len(expected)}"
    status, _, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}", Range="bytes=-100")
    assert status == 206 and body == expected[-100:]


async def test_head_and_range_on_cold_file(proxy, upstream, wheel_bytes):
    expected = wheel_bytes(BIG)
    upstream.index.chunk_delay = 0.02  # the full download takes a while
    status, headers, _ = await fetch(proxy.url + f"bigpkg/{BIG}", "HEAD")
    assert status == 200
    assert int(headers["Content-Length"]) == len(expected)
    assert headers["Accept-Ranges"] == "bytes"
    status, headers, body = await fetch(proxy.url + f"bigpkg/{BIG}", Range="bytes=-2000")
    assert status == 206 and body == expected[-2000:]
    assert (
        headers["Content-Range"]
        == f"bytes {len(expected) - 2000}-{len(expected) - 1}/{len(expected)}"
    )
    status, _, body = await fetch(proxy.url + f"bigpkg/{BIG}")
    assert status == 200 and body == expected
    assert upstream.index.file_hits(BIG) >= 1


async def test_concurrent_cold_tail_ranges_cost_the_upstream_one_range(
    proxy, upstream, wheel_bytes
):
    """uv reads each cold wheel's tail from every client at once: one upstream range fetch
    answers them all while the single full download goes on."""
    expected = wheel_bytes(BIG)
    upstream.index.chunk_delay = 0.02  # the full download stays behind the tail
    results = await asyncio.gather(
        *(fetch(proxy.url + f"bigpkg/{BIG}", Range="bytes=-2000") for _ in range(8))
    )
    assert all(status == 206 for status, _, _ in results)
    assert all(body == expected[-2000:] for _, _, body in results)
    size = len(expected)
    assert all(
        h["Content-Range"] == f"bytes {size - 2000}-{size - 1}/{size}" for _, h, _ in results
    )
    # one range request, however many clients asked, and no download: nobody asked for it
    assert upstream.index.file_hits(BIG) == 1
    status, _, body = await fetch(proxy.url + f"bigpkg/{BIG}")
    assert status == 200 and body == expected
    assert upstream.index.file_hits(BIG) == 2


async def test_large_cold_range_is_streamed_not_held(proxy, upstream, wheel_bytes):
    expected = wheel_bytes(BIG)
    upstream.index.chunk_delay = 0.02
    first = len(expected) - 3 * 1024 * 1024
    status, headers, body = await fetch(proxy.url + f"bigpkg/{BIG}", Range=f"bytes={first}-")
    assert status == 206 and body == expected[first:]
    assert headers["Content-Range"] == f"bytes {first}-{len(expected) - 1}/{len(expected)}"


async def test_unsatisfiable_range(proxy, wheel_bytes):
    await fetch(proxy.url + f"tinyalpha/{ALPHA}")
    size = len(wheel_bytes(ALPHA))
    status, headers, _ = await fetch(proxy.url + f"tinyalpha/{ALPHA}", Range=f"bytes={size}-")
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{size}"


async def test_concurrent_cold_clients_share_one_download(proxy, upstream, wheel_bytes):
    expected = wheel_bytes(BIG)
    upstream.index.chunk_delay = 0.005
    results = await asyncio.gather(*(fetch(proxy.url + f"bigpkg/{BIG}") for _ in range(8)))
    assert all(status == 200 for status, _, _ in results)
    assert all(body == expected for _, _, body in results)
    assert upstream.index.file_hits(BIG) == 1


async def test_cold_file_streams_before_download_ends(proxy, upstream, wheel_bytes):
    upstream.index.chunk_delay = 0.05
    size = len(wheel_bytes(BIG))
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url + f"bigpkg/{BIG}") as resp:
            first = await resp.content.readany()
            # bytes arrive while the upstream is still far from done
            assert first and len(first) < size
            rest = await resp.read()
    assert len(first) + len(rest) == size


async def test_hash_mismatch_is_not_cached_and_client_sees_failure(proxy, upstream, wheel_bytes):
    upstream.index.corrupt.add(ALPHA)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.get(proxy.url + f"tinyalpha/{ALPHA}") as resp:
                await resp.read()
    upstream.index.corrupt.clear()
    status, _, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}")
    assert status == 200
    assert hashlib.sha256(body).digest() == hashlib.sha256(wheel_bytes(ALPHA)).digest()
    assert upstream.index.file_hits(ALPHA) == 2
    assert not list((proxy.config.cache_dir / "tmp").iterdir())


async def test_metadata_file_is_proxied_and_cached(proxy, upstream, wheel_metadata):
    name = ALPHA + ".metadata"
    for _ in range(2):
        status, _, body = await fetch(proxy.url + f"tinyalpha/{name}")
        assert status == 200
        assert body == wheel_metadata(ALPHA)
    assert upstream.index.file_hits(name) == 1


async def test_unknown_file_and_hostile_names(proxy):
    assert (await fetch(proxy.url + "tinyalpha/nope-1.0.tar.gz"))[0] == 404
    assert (await fetch(proxy.url + "tinyalpha/..%2F..%2Fetc%2Fpasswd"))[0] in (400, 404)
    assert (await fetch(proxy.url + "tinyalpha/.hidden"))[0] == 400


async def test_upstream_file_error_is_502(proxy, upstream):
    await fetch(proxy.url + "tinyalpha/")
    await upstream.stop()
    status, _, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}")
    assert status == 502
    assert b"cannot connect" in body


async def test_clients_of_a_running_download_get_it_by_sendfile(
    proxy, upstream, wheel_bytes, monkeypatch
):
    # No read into memory on a plain connection: the bytes go from the staging file to the
    # socket as they land, for every client at once.
    reads = []
    real_pread = downloads_module.os.pread
    fake_os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os)})
    fake_os.pread = lambda *args: reads.append(args) or real_pread(*args)
    monkeypatch.setattr(downloads_module, "os", fake_os)
    upstream.index.chunk_delay = 0.01  # clients join while it runs
    url = proxy.url + f"bigpkg/{BIG}"
    async with aiohttp.ClientSession() as session:

        async def get():
            async with session.get(url) as resp:
                return resp.headers["X-Cache"], await resp.read()

        answers = await asyncio.gather(*(get() for _ in range(5)))
    assert {body for _, body in answers} == {wheel_bytes(BIG)}
    assert {"miss", "coalesced"} >= {outcome for outcome, _ in answers}
    assert reads == []

"""Size limits and eviction, hostile requests, and many clients at once."""

import asyncio
import hashlib

import aiohttp

from tests.fakes.process import ProxyProcess

BIG = "bigpkg-1.0-py3-none-any.whl"
HUGE = "hugepkg-1.0-py3-none-any.whl"
ALPHA = "tinyalpha-2.0-py3-none-any.whl"


async def fetch(url, **headers):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as resp:
            return resp.status, await resp.read()


async def test_eviction_never_breaks_a_download_in_progress(make_proxy, upstream, wheel_bytes):
    proxy = await make_proxy(max_size=12 * 1024 * 1024)
    assert (await fetch(proxy.url + f"bigpkg/{BIG}"))[0] == 200
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url + f"bigpkg/{BIG}") as slow:
            head = await slow.content.readexactly(64 * 1024)
            # Caching another large file pushes the cache over its limit: the least recently
            # used file (the one being read) is evicted while it is being served.
            assert (await fetch(proxy.url + f"hugepkg/{HUGE}"))[0] == 200
            rest = await slow.read()
    assert head + rest == wheel_bytes(BIG)
    assert (await fetch(proxy.url + f"bigpkg/{BIG}"))[1] == wheel_bytes(BIG)
    assert upstream.index.file_hits(BIG) == 2  # it really was evicted
    metrics = (await fetch(proxy.url.replace("/simple/", "/metrics")))[1].decode()
    evicted = [line for line in metrics.splitlines() if line.startswith("cacheproxy_evictions_")]
    assert evicted[0].startswith("cacheproxy_evictions_total ")
    assert float(evicted[0].split()[1]) >= 1
    files = [line for line in metrics.splitlines() if line.startswith("cacheproxy_cache_files ")]
    assert float(files[0].split()[1]) >= 1


async def test_a_file_larger_than_the_cache_is_still_served(make_proxy, upstream, wheel_bytes):
    proxy = await make_proxy(max_size=4 * 1024 * 1024)
    for _ in range(2):
        status, body = await fetch(proxy.url + f"bigpkg/{BIG}")
        assert status == 200 and body == wheel_bytes(BIG)


async def raw_request(port, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    return response


async def test_hostile_request_lines_get_4xx(proxy, upstream):
    port = proxy.server.port
    cases = {
        b"GET /simple/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n": (b"404", b"400"),
        b"GET /simple/tinyalpha/..%2F..%2Fstore HTTP/1.1\r\nHost: x\r\n\r\n": (b"400", b"404"),
        b"GET /simple/%ZZ/ HTTP/1.1\r\nHost: x\r\n\r\n": (b"400", b"404"),
        # absolute-form: the host is ignored, the path is looked up on the configured upstream
        b"GET http://evil.test/simple/x/ HTTP/1.1\r\nHost: x\r\n\r\n": (b"404",),
        b"GET /simple/" + b"a" * 10000 + b"/ HTTP/1.1\r\nHost: x\r\n\r\n": (b"400", b"414"),
        b"GET /simple/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n": (
            b"400",
            b"431",
        ),
        b"POST /simple/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n": (b"405",),
        b"DELETE /simple/tinyalpha/ HTTP/1.1\r\nHost: x\r\n\r\n": (b"405",),
    }
    for request, allowed in cases.items():
        response = await raw_request(port, request)
        status = response.split(b" ", 2)[1] if response else b""
        assert status in allowed, (request[:60], response[:200])
    # nothing hostile reached the upstream: only the harmless lookup of project "x"
    assert set(upstream.index.requests) == {("GET", "/simple/x/")}


async def test_200_concurrent_clients_mixing_cold_and_warm(upstream, tmp_path, wheel_bytes):
    proxy = await asyncio.to_thread(ProxyProcess, tmp_path / "cache", upstream.simple_url)
    names = {
        "tinyalpha": ALPHA,
        "bigpkg": BIG,
        "beta-helper": "beta_helper-1.0-py3-none-any.whl",
        "hugepkg": HUGE,
    }
    digests = {name: hashlib.sha256(wheel_bytes(name)).hexdigest() for name in names.values()}
    try:
        await fetch(proxy.url + f"tinyalpha/{ALPHA}")  # one warm file among the cold ones
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i):
                project = list(names)[i % len(names)]
                is_file = i % 3 != 0
                url = proxy.url + (f"{project}/{names[project]}" if is_file else f"{project}/")
                digest = hashlib.sha256()
                async with session.get(url) as resp:
                    async for chunk in resp.content.iter_chunked(256 * 1024):
                        digest.update(chunk)
                    return project, is_file, resp.status, digest.hexdigest()

            results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 120)
        for project, is_file, status, digest in results:
            assert status == 200
            if is_file:
                assert digest == digests[names[project]]
        for filename in names.values():
            assert upstream.index.file_hits(filename) == 1
        peak = proxy.peak_rss_mib()
        print(f"proxy peak RSS serving 200 concurrent clients: {peak:.0f} MiB")
        # Files stream through a staging file, not memory: 200 clients of two 8 MiB files
        # must not cost anything like 200 copies.
        assert peak < 200
    finally:
        await asyncio.to_thread(proxy.stop)


async def test_malformed_requests_are_logged_in_one_line(upstream, tmp_path):
    proxy = await asyncio.to_thread(ProxyProcess, tmp_path / "cache", upstream.simple_url)
    try:
        port = int(proxy.url.split(":")[2].split("/")[0])
        response = await raw_request(port, b"GET / HTTP/1.1\r\nX: " + b"b" * 20000 + b"\r\n\r\n")
        assert response.split(b" ", 2)[1] in (b"400", b"431")
    finally:
        await asyncio.to_thread(proxy.stop)
    log = "".join(proxy.log)
    assert "bad request" in log
    assert "Traceback" not in log


async def test_slow_clients_are_cut_off(upstream, tmp_path):
    proxy = await asyncio.to_thread(
        ProxyProcess, tmp_path / "cache", upstream.simple_url, "--idle-timeout", "1"
    )
    try:
        port = int(proxy.url.split(":")[2].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /simple/ HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        loop = asyncio.get_running_loop()
        started = loop.time()
        closed = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        assert closed == b""
        assert loop.time() - started < 25  # the server hung up, not the test's own limit
    finally:
        await asyncio.to_thread(proxy.stop)

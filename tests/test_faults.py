"""Faults caused for real: broken upstreams, crashes, corrupt stores, credentials."""

import asyncio
import logging
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from cacheproxy.protocol.negotiation import JSON_V1
from tests.fakes.clock import FakeClock
from tests.fakes.process import ProxyProcess
from tests.fakes.tmpfs import small_tmpfs

ALPHA = "tinyalpha-2.0-py3-none-any.whl"
BIG = "bigpkg-1.0-py3-none-any.whl"


async def fetch(url, **headers):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as resp:
            return resp.status, resp.headers, await resp.read()


async def test_truncated_upstream_body_is_never_cached(proxy, upstream, wheel_bytes):
    upstream.index.truncate.add(BIG)
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(proxy.url + f"bigpkg/{BIG}")
    upstream.index.truncate.clear()
    status, _, body = await fetch(proxy.url + f"bigpkg/{BIG}")
    assert status == 200 and body == wheel_bytes(BIG)
    assert upstream.index.file_hits(BIG) == 2


@pytest.mark.parametrize("garbage", [b"{not json", b'{"files": 3}', b"\xff\xfe\x00"])
async def test_garbage_page_is_502_and_not_cached(proxy, upstream, garbage):
    upstream.index.page_body = garbage
    status, _, body = await fetch(proxy.url + "tinyalpha/", Accept=JSON_V1)
    assert status == 502
    assert b"upstream" in body
    upstream.index.page_body = None
    assert (await fetch(proxy.url + "tinyalpha/", Accept=JSON_V1))[0] == 200


async def test_slow_upstream_times_out_with_504(make_proxy, upstream):
    upstream.index.page_delay = 2
    proxy = await make_proxy(read_timeout=0.3)
    status, _, body = await fetch(proxy.url + "tinyalpha/")
    assert status == 504
    assert body == b"upstream timed out\n"


async def test_offline_mode_serves_only_the_cache(make_proxy, upstream, wheel_bytes):
    online = await make_proxy()
    await fetch(online.url + f"tinyalpha/{ALPHA}")
    await online.close()
    upstream.index.reset_counts()
    offline = await make_proxy(offline=True, page_ttl=0)
    assert (await fetch(offline.url + "tinyalpha/"))[0] == 200
    status, _, body = await fetch(offline.url + f"tinyalpha/{ALPHA}")
    assert status == 200 and body == wheel_bytes(ALPHA)
    status, _, body = await fetch(offline.url + "beta-helper/")
    assert status == 404 and b"offline" in body
    assert upstream.index.requests.total() == 0


async def test_upstream_credentials_are_used_and_never_shown(make_proxy, upstream, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-token"
    upstream.index.required_auth = ("ci", secret)
    base = upstream.simple_url.replace("http://", f"http://ci:{secret}@")
    proxy = await make_proxy(upstream=base)
    status, _, page = await fetch(proxy.url + "tinyalpha/", Accept=JSON_V1)
    assert status == 200
    status, _, _ = await fetch(proxy.url + f"tinyalpha/{ALPHA}")
    assert status == 200
    assert secret.encode() not in page
    await upstream.stop()
    _, _, error = await fetch(proxy.url + "beta-helper/")
    assert secret.encode() not in error
    assert secret not in caplog.text


async def test_upstream_401_is_passed_on_and_not_cached(make_proxy, upstream):
    upstream.index.required_auth = ("ci", "right")
    bad = upstream.simple_url.replace("http://", "http://ci:wrong@")
    proxy = await make_proxy(upstream=bad)
    for _ in range(2):
        status, _, body = await fetch(proxy.url + "tinyalpha/")
        assert status == 401
        assert b"wrong" not in body
    assert upstream.index.page_hits("tinyalpha") == 2


async def test_kill_9_mid_download_leaves_a_clean_cache(upstream, tmp_path, wheel_bytes):
    cache = tmp_path / "cache"
    upstream.index.chunk_delay = 0.05
    proxy = await asyncio.to_thread(ProxyProcess, cache, upstream.simple_url)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(proxy.url + f"bigpkg/{BIG}") as resp:
                await resp.content.readexactly(256 * 1024)
                assert list((cache / "tmp").iterdir())  # a partial file is being written
                proxy.proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proxy.proc.wait)
    except aiohttp.ClientPayloadError:
        pass
    finally:
        await asyncio.to_thread(proxy.stop)
    upstream.index.chunk_delay = 0
    proxy = await asyncio.to_thread(ProxyProcess, cache, upstream.simple_url)
    try:
        assert not list((cache / "tmp").iterdir())
        status, _, body = await fetch(proxy.url + f"bigpkg/{BIG}")
        assert status == 200 and body == wheel_bytes(BIG)
    finally:
        assert await asyncio.to_thread(proxy.stop) == 0


async def test_verify_removes_files_whose_bytes_changed(proxy, upstream, wheel_bytes):
    await fetch(proxy.url + f"tinyalpha/{ALPHA}")
    await fetch(proxy.url + "beta-helper/beta_helper-1.0-py3-none-any.whl")
    store_dir = proxy.config.cache_dir / "store"
    stored = [p for p in store_dir.rglob("*.val") if p.read_bytes() == wheel_bytes(ALPHA)]
    assert len(stored) == 1
    data = bytearray(stored[0].read_bytes())
    data[100] ^= 0xFF
    stored[0].write_bytes(bytes(data))

    env = {**os.environ, "CACHEPROXY_CACHE_DIR": str(proxy.config.cache_dir)}

    def verify():
        command = [sys.executable, "-m", "cacheproxy", "verify"]
        return subprocess.run(command, capture_output=True, text=True, env=env)

    result = await asyncio.to_thread(verify)
    assert result.returncode == 1, result.stderr  # a cron job or CI step can act on it
    assert f"removed tinyalpha/{ALPHA}" in result.stdout
    assert "checked 2 files, removed 1" in result.stdout
    again = await asyncio.to_thread(verify)
    assert again.returncode == 0, again.stderr
    assert "checked 1 files, removed 0" in again.stdout
    # the next request fetches a good copy again
    status, _, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}")
    assert status == 200 and body == wheel_bytes(ALPHA)
    assert upstream.index.file_hits(ALPHA) == 2


@pytest.fixture
def small_disk(tmp_path):
    """A real 72 MiB filesystem, so 'disk full' happens for real (needs root to mount)."""
    with small_tmpfs(tmp_path / "small", "72m") as mountpoint:
        yield mountpoint


async def test_full_disk_streams_uncached_then_resumes(
    make_proxy, upstream, small_disk, wheel_bytes, caplog
):
    proxy = await make_proxy(cache_dir=small_disk / "cache")
    for _ in range(2):
        status, _, body = await fetch(proxy.url + f"bigpkg/{BIG}")
        assert status == 200 and body == wheel_bytes(BIG)
    assert upstream.index.file_hits(BIG) == 2  # passed through each time, never stored
    assert "disk full" in caplog.text
    assert not list((small_disk / "cache" / "tmp").iterdir())
    # a file that fits is still cached
    for _ in range(2):
        assert (await fetch(proxy.url + f"tinyalpha/{ALPHA}"))[0] == 200
    assert upstream.index.file_hits(ALPHA) == 1


async def test_transient_upstream_errors_are_retried(make_proxy, upstream):
    proxy = await make_proxy(retries=2)
    upstream.index.fail_next = 2  # the first two page requests answer 503
    status, _, _ = await fetch(proxy.url + "tinyalpha/")
    assert status == 200
    assert upstream.index.page_hits("tinyalpha") == 3


async def test_retries_give_up_with_502(make_proxy, upstream):
    proxy = await make_proxy(retries=1)
    upstream.index.page_status = 503
    status, _, body = await fetch(proxy.url + "tinyalpha/")
    assert status == 502 and b"503" in body
    assert upstream.index.page_hits("tinyalpha") == 2


async def test_outage_costs_one_attempt_then_stale_pages_come_at_once(make_proxy, upstream):
    clock = FakeClock()
    proxy = await make_proxy(page_ttl=0, clock=clock)
    for project in ("tinyalpha", "beta-helper"):
        assert (await fetch(proxy.url + f"{project}/"))[0] == 200
    await upstream.stop()
    clock.now += 1
    status, headers, _ = await fetch(proxy.url + "tinyalpha/")
    assert status == 200 and "cannot connect" in headers["Warning"]
    status, headers, _ = await fetch(proxy.url + "beta-helper/")
    assert status == 200 and "upstream unreachable" in headers["Warning"]  # not asked again

"""Upstreams that trickle: a page gets an overall deadline, a file a floor under its rate, so
neither holds a client for minutes while --read-timeout (between bytes) never fires."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from cacheproxy.config import load_config
from cacheproxy.errors import DownloadFailed
from cacheproxy.http.keys import STORE
from cacheproxy.protocol.negotiation import JSON_V1
from cacheproxy.upstream import RateFloor
from tests.fakes.clock import FakeClock

BIG = "bigpkg-1.0-py3-none-any.whl"
# Far longer than any of these tests may take: a hang fails instead of stalling the suite.
BOUND = 20


async def fetch(url: str) -> tuple[int, aiohttp.typedefs.LooseHeaders, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Accept": JSON_V1}) as resp:
            return resp.status, resp.headers, await resp.read()


async def test_trickled_page_answers_504_at_the_page_deadline(make_proxy, upstream):
    upstream.index.page_trickle = 0.05  # each gap far inside the read timeout
    proxy = await make_proxy(page_timeout=1)
    status, _, body = await asyncio.wait_for(fetch(proxy.url + "tinyalpha/"), BOUND)
    assert status == 504
    assert body == b"upstream timed out: no whole page within 1 s\n"


async def test_trickled_page_serves_the_stored_page_stale(make_proxy, upstream):
    clock = FakeClock()
    proxy = await make_proxy(page_timeout=1, page_ttl=0, clock=clock)
    status, _, fresh = await fetch(proxy.url + "tinyalpha/")
    assert status == 200
    # The page changes, so the upstream cannot answer 304 at once: it trickles the new one.
    upstream.index.files["tinyalpha-1.0-py3-none-any.whl"].yanked = "superseded"
    upstream.index.page_trickle = 0.05
    clock.now += 1
    status, headers, body = await asyncio.wait_for(fetch(proxy.url + "tinyalpha/"), BOUND)
    assert status == 200 and body == fresh
    assert "no whole page within 1 s" in headers["Warning"]


async def test_trickled_file_is_cut_off_and_not_stored(make_proxy, upstream, wheel_bytes):
    proxy = await make_proxy(min_rate=4 * 1024**2, min_rate_window=0.3)
    upstream.index.chunk_size, upstream.index.chunk_delay = 4096, 0.02  # about 200 KB/s
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(fetch(proxy.url + f"bigpkg/{BIG}"), BOUND)
    store = proxy.server.app[STORE]
    assert await store.find_file("bigpkg", BIG) is None
    assert not list(store.staging_dir.iterdir())

    upstream.index.chunk_size, upstream.index.chunk_delay = 64 * 1024, 0
    for expected in ("miss", "hit"):
        status, headers, body = await fetch(proxy.url + f"bigpkg/{BIG}")
        assert (status, headers["X-Cache"]) == (200, expected) and body == wheel_bytes(BIG)
    assert upstream.index.file_hits(BIG) == 2


def test_rate_floor_passes_a_slow_steady_link_and_fails_a_trickle():
    steady = RateFloor(min_rate=1000, window=30)
    for _ in range(600):  # ten minutes at 1.2 KB/s
        steady.add(1200, waited=1.0)
    trickle = RateFloor(min_rate=1000, window=30)
    for _ in range(29):  # the first window is grace
        trickle.add(1, waited=1.0)
    with pytest.raises(DownloadFailed, match="upstream too slow: 1 bytes/s"):
        for _ in range(3):
            trickle.add(1, waited=1.0)


def test_rate_floor_measures_the_last_window_not_the_whole_transfer():
    floor = RateFloor(min_rate=1000, window=30)
    floor.add(10_000_000, waited=1.0)  # a fast start does not pay for a stall later
    with pytest.raises(DownloadFailed):
        for _ in range(60):
            floor.add(10, waited=1.0)


def test_rate_floor_off_at_zero():
    floor = RateFloor(min_rate=0, window=1)
    for _ in range(100):
        floor.add(1, waited=10.0)


def test_trickle_settings_parse_with_units():
    config = load_config({"page_timeout": "5s", "min_rate": "64KiB/s"}, {})
    assert (config.page_timeout, config.min_rate, config.min_rate_window) == (5, 65536, 30)
    assert load_config({}, {"CACHEPROXY_MIN_RATE": "0"}).min_rate == 0

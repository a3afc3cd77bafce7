"""A disk that fills up for real: pages and files are served uncached, /ready and the status
page say so, and caching resumes by itself once there is room again."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from cacheproxy.protocol.negotiation import JSON_V1
from tests.fakes.tmpfs import fill, small_tmpfs

ALPHA = "tinyalpha-2.0-py3-none-any.whl"
RESERVE = 256 * 1024  # of a 2 MiB disk, instead of the default 64 MiB


@pytest.fixture
def tiny_disk(tmp_path):
    with small_tmpfs(tmp_path / "tiny", "2m") as mountpoint:
        yield mountpoint


async def get(url: str) -> tuple[int, str | None, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Accept": JSON_V1}) as resp:
            return resp.status, resp.headers.get("X-Cache"), await resp.read()


async def test_full_disk_serves_pages_and_files_uncached_then_resumes(
    make_proxy, upstream, tiny_disk, wheel_bytes, caplog
):
    caplog.set_level(logging.WARNING)
    proxy = await make_proxy(cache_dir=tiny_disk / "cache", disk_reserve=RESERVE)
    root = proxy.url.removesuffix("simple/")
    filler = tiny_disk / "filler"
    await asyncio.to_thread(fill, filler)

    # The first page finds out the hard way (its write fails), the second is not even tried.
    for project in ("tinyalpha", "tinyalpha", "beta-helper"):
        status, outcome, _ = await get(proxy.url + f"{project}/")
        assert (status, outcome) == (200, "uncached")
    assert upstream.index.page_hits("tinyalpha") == 2
    assert "page of tinyalpha is served without being cached" in caplog.text
    status, outcome, body = await get(proxy.url + f"tinyalpha/{ALPHA}")
    assert (status, outcome) == (200, "uncached") and body == wheel_bytes(ALPHA)

    status, _, body = await get(root + "ready")
    assert status == 503 and json.loads(body)["disk_full"] is True
    status, _, body = await get(root)
    assert status == 200 and b'id="disk-full"' in body

    filler.unlink()
    for project in ("tinyalpha", "beta-helper"):
        outcomes = [(await get(proxy.url + f"{project}/"))[:2] for _ in range(2)]
        assert outcomes == [(200, "miss"), (200, "hit")]
    status, _, body = await get(root + "ready")
    assert status == 200 and json.loads(body)["disk_full"] is False
    status, _, body = await get(root)
    assert b'id="disk-full"' not in body
    for expected in ("miss", "hit"):
        assert (await get(proxy.url + f"tinyalpha/{ALPHA}"))[:2] == (200, expected)

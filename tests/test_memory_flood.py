"""A flood of concurrent requests for many large pages stays within the memory budget: the
page caches' accounted bytes never pass it, and what the process allocates at its peak
stays within a generous bound that does not grow with the number of requests."""

from __future__ import annotations

import asyncio
import json
import tracemalloc

from aiohttp import ClientSession

from cacheproxy.http.keys import PAGES
from tests.fakes.upstream import UpstreamFile

PROJECTS = 20
FILES_PER_PROJECT = 3000
REQUESTS = 200
BUDGET = 8 * 1024 * 1024
# Everything the process allocates at its peak, the fake upstream included: the pages being
# fetched and parsed (at most two at once) and the caches. Without bounds this grows with
# the number of pages and requests in flight.
PEAK_BOUND = 96 * 1024 * 1024
JSON = {"Accept": "application/vnd.pypi.simple.v1+json", "Accept-Encoding": "gzip"}


def add_large_projects(index) -> None:
    for p in range(PROJECTS):
        project = f"large{p}"
        for i in range(FILES_PER_PROJECT):
            filename = f"{project}-1.{i}-py3-none-any.whl"
            index.files[filename] = UpstreamFile(project, filename, b"")


async def read_all(session: ClientSession, url: str) -> int:
    """The body's length, read in pieces: the clients must not be what holds the memory."""
    async with session.get(url, headers=JSON) as resp:
        assert resp.status == 200
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
        return size


async def test_a_flood_of_large_pages_stays_within_the_budget(make_proxy, upstream):
    add_large_projects(upstream.index)
    # A deadline no busy machine reaches: the fake upstream renders its pages on this loop.
    proxy = await make_proxy(memory_budget=BUDGET, page_timeout=600)
    pages = proxy.server.app[PAGES]
    held_at_most = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal held_at_most
        while not done.is_set():
            held_at_most = max(held_at_most, sum(pages.memory_held().values()))
            await asyncio.sleep(0.005)

    urls = [proxy.url + f"large{n % PROJECTS}/" for n in range(REQUESTS)]
    tracemalloc.start()
    try:
        watcher = asyncio.create_task(watch())
        async with ClientSession() as session:
            sizes = await asyncio.gather(*(read_all(session, url) for url in urls))
            done.set()
            await watcher
            # And once more, warm: hot pages where the budget holds them, re-rendered where not.
            again = await asyncio.gather(*(read_all(session, url) for url in urls[:PROJECTS]))
            async with session.get(urls[0], headers=JSON) as resp:  # a large page, whole
                page = json.loads(await resp.read())
            plain = {**JSON, "Accept-Encoding": "identity"}
            async with session.head(urls[0], headers=plain) as head:
                assert head.status == 200 and await head.read() == b""
                assert int(head.headers["Content-Length"]) == sizes[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(size > FILES_PER_PROJECT * 100 for size in sizes)
    assert again == sizes[:PROJECTS]
    assert len(page["files"]) == FILES_PER_PROJECT and page["name"] == "large0"
    assert upstream.index.page_hits("large0") == 1  # one fetch per page, whatever the flood
    assert 0 < held_at_most <= BUDGET
    assert sum(pages.memory_held().values()) <= BUDGET
    assert peak < PEAK_BOUND, f"peak {peak / 2**20:.1f} MiB"

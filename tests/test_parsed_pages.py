"""Pages in use stay parsed in memory, tied to the store's page version."""

from __future__ import annotations

import asyncio

from aiohttp import ClientSession

from cacheproxy.documents.memo import parsed_pages
from cacheproxy.http.keys import FILES
from cacheproxy.protocol.compact import CompactPage
from cacheproxy.protocol.page import ProjectPage
from cacheproxy.storage.records import CachedPage
from tests.test_tail_metadata import strip_metadata

ALPHA = "tinyalpha-2.0-py3-none-any.whl"


def entry(files: int) -> CachedPage:
    listed = [{"filename": f"demo-{n}.tar.gz"} for n in range(files)]
    origins = {f["filename"]: "https://files.example/" + f["filename"] for f in listed}
    page = CompactPage.of(ProjectPage({"name": "demo", "files": listed}, origins))
    return CachedPage(status=200, page=page, fetched_at=0)


def test_lookup_needs_the_same_version():
    pages = parsed_pages()
    kept = entry(3)
    pages.put("demo", (0, 2), kept)
    assert pages.get("demo", (0, 2)) is kept
    assert pages.get("demo", (0, 3)) is None
    assert pages.get("other", (0, 2)) is None


def test_bounded_by_bytes_least_recently_used_first():
    weight = parsed_pages().weigh(entry(19))
    pages = parsed_pages(max_bytes=weight * 4 + weight // 2)
    for name in ("a", "b", "c", "d"):
        pages.put(name, (0, 1), entry(19))
    pages.get("a", (0, 1))
    pages.put("e", (0, 1), entry(19))
    pages.put("f", (0, 1), entry(19))
    assert pages.get("a", (0, 1)) is not None  # used recently, kept
    assert pages.get("b", (0, 1)) is None and pages.get("c", (0, 1)) is None
    assert len(pages) == 4
    assert pages.weight == 4 * weight
    pages.put("giant", (0, 1), entry(25))  # more than a quarter of the bound
    assert pages.get("giant", (0, 1)) is None
    missing = CachedPage(status=404, page=None, fetched_at=0)
    pages.put("nothing", (0, 1), missing)
    assert pages.get("nothing", (0, 1)) is missing


async def test_a_cold_file_reads_the_stored_page_at_most_once(proxy, upstream, count_page_reads):
    reads = count_page_reads(proxy)
    url = proxy.url + f"tinyalpha/{ALPHA}"
    async with ClientSession() as session:
        async with session.get(proxy.url + "tinyalpha/") as page:
            assert page.status == 200
        async with session.head(url) as head:
            assert head.status == 200
        async with session.get(url, headers={"Range": "bytes=-100"}) as tail:
            assert tail.status == 206 and len(await tail.read()) == 100
        async with session.get(url) as whole:
            assert whole.status == 200
            await whole.read()
    # The page miss looked in the store once; the file's requests used the parsed page.
    assert reads == ["tinyalpha"]


async def test_concurrent_first_requests_read_a_stored_page_once(
    make_proxy, upstream, count_page_reads
):
    first = await make_proxy()
    async with ClientSession() as session:
        async with session.get(first.url + "tinyalpha/") as page:
            assert page.status == 200  # stored, for the proxy below to find
    second = await make_proxy()  # the same cache: the page is stored, nothing is held
    reads = count_page_reads(second)

    async def get(session: ClientSession) -> int:
        async with session.head(second.url + f"tinyalpha/{ALPHA}") as resp:
            return resp.status

    async with ClientSession() as session:
        statuses = await asyncio.gather(*(get(session) for _ in range(20)))
    assert statuses == [200] * 20
    assert reads == ["tinyalpha"]  # one read, with its version, for all twenty
    assert upstream.index.page_hits("tinyalpha") == 1  # the first proxy's fetch alone


async def test_facts_learned_re_render_the_page_without_reading_it_again(
    proxy, upstream, count_page_reads
):
    strip_metadata(upstream)  # so the proxy reads it from the wheel, and learns its sha256
    reads = count_page_reads(proxy)
    async with ClientSession() as session:
        async with session.get(proxy.url + "tinyalpha/") as page:
            before = page.headers["ETag"]
        async with session.get(proxy.url + f"tinyalpha/{ALPHA}.metadata") as metadata:
            assert metadata.status == 200
            await metadata.read()
        await proxy.server.app[FILES].tail_metadata.flush()
        async with session.get(proxy.url + "tinyalpha/") as page:
            after = page.headers["ETag"]
    # The metadata read taught the store a fact, so the page as served changed; the page as
    # stored did not, so it was not read again.
    assert after != before
    assert reads.count("tinyalpha") == 1  # (the lookahead reads its dependency's page too)

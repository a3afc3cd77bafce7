"""Hot pages are served pre-rendered and pre-compressed, and never out of date."""

from __future__ import annotations

import asyncio
import gzip

import pytest
from aiohttp import ClientSession

from cacheproxy.documents.memo import HotPage, rendered_pages
from cacheproxy.protocol.render import with_variants
from cacheproxy.storage.records import CachedPage

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def rendered(size: int) -> HotPage:
    entry = CachedPage(status=200, page=None, fetched_at=0.0)
    return HotPage(entry, with_variants(b"x" * size))


def test_lookup_needs_the_same_version():
    pages = rendered_pages()
    pages.put(("demo", "json"), (0, 3), rendered(2000))
    assert pages.get(("demo", "json"), (0, 3)).rendered.gzipped is not None
    assert pages.get(("demo", "json"), (0, 4)) is None
    assert pages.get(("demo", "json"), (1, 3)) is None  # the store's generation moved on
    assert pages.get(("demo", "html"), (0, 3)) is None


def test_bounded_by_bytes_least_recently_used_first():
    pages = rendered_pages(max_bytes=5_000)  # room for ten
    for name in ("a", "b", "c"):
        pages.put((name, "json"), (0, 1), rendered(500))  # tiny bodies: not compressed
    pages.get(("a", "json"), (0, 1))
    for name in ("d", "e", "f", "g", "h", "i", "j", "k", "l"):
        pages.put((name, "json"), (0, 1), rendered(500))
    assert pages.get(("a", "json"), (0, 1)) is not None  # used recently, kept
    assert pages.get(("b", "json"), (0, 1)) is None
    assert pages.get(("c", "json"), (0, 1)) is None
    assert len(pages) == 10
    pages.put(("giant", "json"), (0, 1), rendered(3000))  # more than a quarter of the bound
    assert pages.get(("giant", "json"), (0, 1)) is None


def test_a_large_body_is_held_only_gzipped():
    body = b"".join(b'{"filename":"f-%d.whl"},' % i for i in range(10_000))
    large = with_variants(body)
    assert large.held_body is None and gzip.decompress(large.gzipped) == large.body == body
    assert large.size == len(large.gzipped) < len(body) // 4
    assert large.etag == with_variants(body).etag  # made from the body, not its gzip form
    small = with_variants(b"y" * 2000)
    assert small.held_body == small.body == b"y" * 2000 and small.gzipped is not None


@pytest.mark.parametrize("notes", [5_000, 200_000], ids=["held", "gzip-only"])
async def test_warm_page_is_served_without_reading_the_store(
    proxy, upstream, count_page_reads, notes
):
    upstream.index.page_extras = {"_notes": "n" * notes}  # big enough to be compressed
    async with ClientSession() as session:
        url = proxy.url + "tinyalpha/"
        async with session.get(url, headers={**JSON, "Accept-Encoding": "gzip"}) as first:
            body = await first.read()
        reads = count_page_reads(proxy)
        async with session.get(url, headers={**JSON, "Accept-Encoding": "gzip"}) as second:
            assert second.headers["X-Cache"] == "hit"
            assert second.headers["Content-Encoding"] == "gzip"
            assert await second.read() == body
            etag = second.headers["ETag"]
        async with session.get(url, headers={**JSON, "If-None-Match": etag}) as third:
            assert third.status == 304
        async with session.get(url, headers={**JSON, "Accept-Encoding": "identity"}) as plain:
            assert "Content-Encoding" not in plain.headers
            raw = await plain.read()
        assert reads == []
        assert gzip.decompress(await _gzipped(session, url)) == raw


async def _gzipped(session, url):
    async with session.get(
        url, headers={**JSON, "Accept-Encoding": "gzip"}, auto_decompress=False
    ) as resp:
        return await resp.read()


async def test_page_shows_facts_learned_after_it_was_rendered(proxy, upstream):
    """An HTML upstream states no sizes; once a file is cached its size appears at once."""
    upstream.index.mode = "html"
    wheel = "tinyalpha-2.0-py3-none-any.whl"
    async with ClientSession() as session:

        async def size_of_wheel():
            async with session.get(proxy.url + "tinyalpha/", headers=JSON) as resp:
                files = {f["filename"]: f for f in (await resp.json())["files"]}
            return files[wheel].get("size")

        assert await size_of_wheel() is None
        async with session.get(proxy.url + f"tinyalpha/{wheel}") as resp:
            data = await resp.read()
        assert await size_of_wheel() == len(data)


async def test_concurrent_cold_requests_share_one_render(proxy, upstream, monkeypatch):
    from cacheproxy.pages import service as page_service

    renders = []
    original = page_service.with_variants

    def counting(*args):
        renders.append(args[0])
        return original(*args)

    monkeypatch.setattr(page_service, "with_variants", counting)
    upstream.index.page_delay = 0.2  # all twenty arrive while the first is still fetching
    async with ClientSession() as session:

        async def one():
            async with session.get(proxy.url + "tinyalpha/", headers=JSON) as resp:
                assert resp.status == 200
                return await resp.read()

        bodies = await asyncio.gather(*(one() for _ in range(20)))
    assert len(set(bodies)) == 1
    assert len(renders) == 1 and upstream.index.page_hits("tinyalpha") == 1


@pytest.mark.parametrize("mode", ["json", "html"])
async def test_a_cold_page_is_served_as_its_stored_copy_renders(make_proxy, upstream, mode):
    """A cold page's first answer is made from its parse while the page is stored; a proxy
    that finds the page stored renders it from the store's lines to the same bytes and ETag."""
    upstream.index.mode = mode
    upstream.index.page_extras = {"_notes": "n" * 4096}  # large enough to be gzipped
    for file in upstream.index.project_files("tinyalpha"):
        file.metadata = None  # the proxy advertises metadata of its own for the wheels
    # One cache; no lookahead, whose read of a wheel's metadata would teach the store a fact
    # between the two answers and change the second one.
    cold_proxy, stored_proxy = await make_proxy(lookahead=False), await make_proxy(lookahead=False)
    async with ClientSession() as session:

        async def page(proxy):
            headers = {**JSON, "Accept-Encoding": "gzip"}
            async with session.get(proxy.url + "tinyalpha/", headers=headers) as resp:
                return resp.headers["X-Cache"], resp.headers["ETag"], await resp.read()

        cold, stored = await page(cold_proxy), await page(stored_proxy)
    assert (cold[0], stored[0]) == ("miss", "hit")
    assert cold[1:] == stored[1:]
    assert upstream.index.page_hits("tinyalpha") == 1

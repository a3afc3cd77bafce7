"""A wheel's tail, read for its metadata, is not fetched again by the wheel's download."""

from __future__ import annotations

import asyncio
import hashlib
import os

import aiohttp
import pytest
from multidict import CIMultiDict

from cacheproxy.errors import DownloadFailed
from cacheproxy.files.downloads import KeptTail, _ranged_total
from cacheproxy.http.keys import FILES, STORE

BIG = "bigpkg-1.0-py3-none-any.whl"
ALPHA = "tinyalpha-2.0-py3-none-any.whl"


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            return resp.status, await resp.read()


def strip_metadata(upstream) -> None:
    for entry in upstream.index.files.values():
        entry.metadata = None


async def read_metadata(proxy, project: str, filename: str) -> None:
    status, _ = await fetch(proxy.url + f"{project}/{filename}.metadata")
    assert status == 200
    await proxy.server.app[FILES].tail_metadata.flush()


async def test_a_metadata_answer_does_not_wait_for_its_tail_to_be_kept(proxy, upstream):
    strip_metadata(upstream)
    kept_tails = proxy.server.app[FILES].downloads.kept_tails
    released = asyncio.Event()
    keep = kept_tails.keep

    async def held_keep(*args):
        await released.wait()
        await keep(*args)

    kept_tails.keep = held_keep
    status, _ = await asyncio.wait_for(fetch(proxy.url + f"bigpkg/{BIG}.metadata"), 30)
    assert status == 200 and len(kept_tails) == 0  # answered while the tail waits
    released.set()
    await proxy.server.app[FILES].tail_metadata.flush()
    assert len(kept_tails) == 1


async def test_download_after_a_tail_read_fetches_only_the_bytes_before_it(
    proxy, upstream, wheel_bytes
):
    strip_metadata(upstream)
    wheel = wheel_bytes(BIG)
    await read_metadata(proxy, "bigpkg", BIG)
    tail_bytes = upstream.index.bytes_sent[BIG]
    assert 0 < tail_bytes < len(wheel) // 8
    (kept,) = proxy.server.app[FILES].downloads.kept_tails
    assert kept.total == len(wheel) and kept.start < kept.total

    status, body = await fetch(proxy.url + f"bigpkg/{BIG}")
    assert status == 200 and body == wheel
    # The kept tail (end records and directory) crossed the link once; only what the tail
    # read fetched apart from it (METADATA, further in) is fetched again.
    fetched_apart = tail_bytes - (kept.total - kept.start)
    assert upstream.index.bytes_sent[BIG] == len(wheel) + fetched_apart
    assert fetched_apart < 4096
    stored = await proxy.server.app[STORE].find_file("bigpkg", BIG)
    assert stored is not None and stored.sha256 == hashlib.sha256(wheel).hexdigest()
    assert len(proxy.server.app[FILES].downloads.kept_tails) == 0


async def test_a_small_wheel_read_whole_for_its_metadata_needs_no_second_request(
    proxy, upstream, wheel_bytes
):
    strip_metadata(upstream)
    upstream.index.refuse_ranges = True  # answers 200 with the whole file
    await read_metadata(proxy, "tinyalpha", ALPHA)
    assert upstream.index.file_hits(ALPHA) == 1
    status, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}")
    assert status == 200 and body == wheel_bytes(ALPHA)
    assert upstream.index.file_hits(ALPHA) == 1
    assert await proxy.server.app[STORE].find_file("tinyalpha", ALPHA) is not None


async def test_a_kept_tail_that_does_not_match_fails_the_hash_and_is_not_stored(
    proxy, upstream, wheel_bytes
):
    strip_metadata(upstream)
    wheel = wheel_bytes(BIG)
    await read_metadata(proxy, "bigpkg", BIG)
    kept_tails = proxy.server.app[FILES].downloads.kept_tails
    (kept,) = kept_tails
    # As if the upstream's file had changed since.
    fd = os.open(kept.path, os.O_WRONLY)
    os.pwrite(fd, b"\0" * 50, kept.total - 100)
    os.close(fd)

    # Cut off before its last byte, never passed as whole.
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(proxy.url + f"bigpkg/{BIG}")
    assert await proxy.server.app[STORE].find_file("bigpkg", BIG) is None
    # The next request starts over with the whole file.
    status, body = await fetch(proxy.url + f"bigpkg/{BIG}")
    assert status == 200 and body == wheel
    assert await proxy.server.app[STORE].find_file("bigpkg", BIG) is not None


async def test_kept_tails_are_bounded_and_removed_with_the_server(proxy, upstream):
    strip_metadata(upstream)
    kept_tails = proxy.server.app[FILES].downloads.kept_tails
    kept_tails.limit = 1
    await read_metadata(proxy, "bigpkg", BIG)
    (first,) = kept_tails
    await read_metadata(proxy, "tinyalpha", ALPHA)
    assert len(kept_tails) == 1 and not first.path.exists()
    (second,) = kept_tails
    await proxy.server.app[FILES].downloads.close()
    assert not second.path.exists()


@pytest.mark.parametrize(
    "content_range",
    ["bytes 1-999/5000", "bytes 0-998/5000", "bytes 0-999/6000", "", "bytes */5000"],
)
def test_a_range_answer_must_be_exactly_the_bytes_before_the_tail(tmp_path, content_range):
    tail = KeptTail(tmp_path / "t", start=1000, total=5000)
    with pytest.raises(DownloadFailed):
        _ranged_total(CIMultiDict({"Content-Range": content_range}), tail)
    assert _ranged_total(CIMultiDict({"Content-Range": "bytes 0-999/5000"}), tail) == 5000
    assert _ranged_total(CIMultiDict({"Content-Range": "bytes 0-999/*"}), tail) == 5000


async def test_a_kept_tail_emptied_since_is_fetched_whole(proxy, upstream, wheel_bytes):
    strip_metadata(upstream)
    wheel = wheel_bytes(BIG)
    await read_metadata(proxy, "bigpkg", BIG)
    (kept,) = proxy.server.app[FILES].downloads.kept_tails
    os.truncate(kept.path, 0)  # as a failed copy from the shared tier leaves it
    upstream.index.reset_counts()
    status, body = await fetch(proxy.url + f"bigpkg/{BIG}")
    assert status == 200 and body == wheel
    assert upstream.index.bytes_sent[BIG] == len(wheel)

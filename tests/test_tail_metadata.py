"""Metadata of cold wheels read from byte ranges of the upstream's copy, for an upstream that
gives no PEP 658 metadata; HEAD and small ranges on cold files without a download."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random

import aiohttp
import pytest

from cacheproxy.http.keys import FILES, STORE
from cacheproxy.protocol.negotiation import JSON_V1
from cacheproxy.protocol.wheel_tail import TailMetadataReader
from tests.fakes.upstream import UpstreamFile
from tests.fakes.wheels import metadata_text
from tests.fakes.zips import patch_central_entry, streamed_zip_bytes, zip64_everywhere, zip_bytes

BIG = "bigpkg-1.0-py3-none-any.whl"
ALPHA = "tinyalpha-2.0-py3-none-any.whl"


async def fetch(url, method="GET", **headers):
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, headers=headers) as resp:
            return resp.status, resp.headers, await resp.read()


def strip_metadata(upstream):
    for entry in upstream.index.files.values():
        entry.metadata = None


def ranges_needed(filename: str, data: bytes) -> int:
    """How many range requests one tail read of these bytes takes."""
    reader = TailMetadataReader(filename, len(data))
    while (want := reader.next_range()) is not None:
        for start, end in filter(None, [reader.alongside()]):
            reader.feed_alongside(start, data[start:end])
        reader.feed(want[0], data[want[0] : want[1]])
    return reader.requests


def add_zip(upstream, project: str, version: str, build, metadata: bytes, padding: int = 0):
    """A wheel made by one of the zip builders, listed without metadata."""
    filename = f"{project}-{version}-py3-none-any.whl"
    members = {
        f"{project}/__init__.py": b"",
        f"{project}/padding.bin": random.Random(project).randbytes(padding),
        f"{project}-{version}.dist-info/METADATA": metadata,
        f"{project}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\n",
    }
    data = build(members)
    upstream.index.files[filename] = UpstreamFile(project, filename, data)
    return filename, data


async def stored_wheel(proxy, project, filename):
    return await proxy.server.app[STORE].find_file(project, filename)


async def test_cold_metadata_is_read_from_ranges_only(proxy, upstream, wheel_bytes, wheel_metadata):
    strip_metadata(upstream)
    wheel = wheel_bytes(BIG)
    status, _, body = await fetch(proxy.url + f"bigpkg/{BIG}.metadata")
    assert status == 200 and body == wheel_metadata(BIG)
    # A few tens of KiB of an 8 MiB wheel, and never the whole file.
    assert upstream.index.bytes_sent[BIG] <= 128 * 1024 < len(wheel)
    assert upstream.index.file_hits(BIG) == ranges_needed(BIG, wheel)
    assert await stored_wheel(proxy, "bigpkg", BIG) is None
    # Stored for good (just after it was served): the next request and the page need no
    # upstream file request.
    await proxy.server.app[FILES].tail_metadata.flush()
    upstream.index.reset_counts()
    assert (await fetch(proxy.url + f"bigpkg/{BIG}.metadata"))[2] == body
    _, _, page = await fetch(proxy.url + "bigpkg/", Accept=JSON_V1)
    (entry,) = json.loads(page)["files"]
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(body).hexdigest()}
    assert upstream.index.file_hits(BIG) == 0


async def test_a_large_directory_and_metadata_before_it_are_read_at_once(proxy, upstream):
    # Thousands of files: the directory is far more than the first tail, and RECORD lies
    # between it and METADATA. The directory's last entries, in the tail, say where METADATA
    # is, so it is fetched while the rest of the directory is: two round trips, not three.
    metadata = metadata_text("manyfiles", "1.0", ["tinyalpha"])
    modules = {f"manyfiles/module_{i}.py": b"pass\n" for i in range(3000)}
    modules["manyfiles/data.bin"] = random.Random(3).randbytes(1_000_000)
    record = "".join(f"{name},sha256={'x' * 43},5\n" for name in modules).encode()
    filename = "manyfiles-1.0-py3-none-any.whl"
    data = zip_bytes(
        modules
        | {"manyfiles-1.0.dist-info/METADATA": metadata, "manyfiles-1.0.dist-info/RECORD": record}
    )
    upstream.index.files[filename] = UpstreamFile("manyfiles", filename, data)
    upstream.index.range_delay = 0.2
    status, _, body = await fetch(proxy.url + f"manyfiles/{filename}.metadata")
    assert status == 200 and body == metadata
    assert upstream.index.file_hits(filename) == 3 == ranges_needed(filename, data)
    assert upstream.index.ranges_in_flight_peak == 2
    assert upstream.index.bytes_sent[filename] < len(data) // 2


@pytest.mark.parametrize("build", [zip64_everywhere, streamed_zip_bytes], ids=["zip64", "descr"])
async def test_zip64_and_data_descriptor_wheels(proxy, upstream, build):
    metadata = metadata_text("oddzip", "1.0", ["tinyalpha"])
    filename, data = add_zip(upstream, "oddzip", "1.0", build, metadata, padding=300_000)
    status, _, body = await fetch(proxy.url + f"oddzip/{filename}.metadata")
    assert status == 200 and body == metadata
    assert upstream.index.bytes_sent[filename] < len(data) // 2
    assert await stored_wheel(proxy, "oddzip", filename) is None


async def test_upstream_without_ranges_falls_back_to_the_download(
    proxy, upstream, wheel_bytes, wheel_metadata
):
    strip_metadata(upstream)
    upstream.index.refuse_ranges = True
    status, _, body = await fetch(proxy.url + f"bigpkg/{BIG}.metadata")
    assert status == 200 and body == wheel_metadata(BIG)
    stored = await stored_wheel(proxy, "bigpkg", BIG)
    assert stored is not None and stored.sha256 == hashlib.sha256(wheel_bytes(BIG)).hexdigest()
    # A small wheel is read whole from the one answer the upstream gives: one request.
    status, _, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}.metadata")
    assert status == 200 and body == wheel_metadata(ALPHA)
    assert upstream.index.file_hits(ALPHA) == 1


async def test_hostile_zip_falls_back_then_is_refused_cleanly(proxy, upstream):
    metadata = metadata_text("bomb", "1.0")
    name = "bomb-1.0.dist-info/METADATA"
    filename, data = add_zip(upstream, "bomb", "1.0", streamed_zip_bytes, metadata)
    hostile = patch_central_entry(data, name, size=0xFFFFFFF0, compressed=0x7FFFFFFF)
    upstream.index.files[filename].data = hostile
    status, _, body = await fetch(proxy.url + f"bomb/{filename}.metadata")
    assert status == 404 and b"no metadata can be read" in body
    assert upstream.index.bytes_sent[filename] <= len(hostile) * 2  # the tail, then the file
    # Not advertised any more, so no client is sent to a file that is not there.
    _, _, page = await fetch(proxy.url + "bomb/", Accept=JSON_V1)
    (entry,) = json.loads(page)["files"]
    assert "core-metadata" not in entry
    assert (await fetch(proxy.url + f"bomb/{filename}.metadata"))[0] == 404


async def test_concurrent_metadata_requests_share_one_read(
    proxy, upstream, wheel_bytes, wheel_metadata
):
    strip_metadata(upstream)
    upstream.index.chunk_delay = 0.01
    results = await asyncio.gather(*(fetch(proxy.url + f"bigpkg/{BIG}.metadata") for _ in range(8)))
    assert all(status == 200 and body == wheel_metadata(BIG) for status, _, body in results)
    assert upstream.index.file_hits(BIG) == ranges_needed(BIG, wheel_bytes(BIG))


async def test_a_read_asked_for_after_the_last_one_was_stored_is_not_made_again(
    proxy, upstream, wheel_metadata
):
    # What the lookahead and a client's request race into: each looks in the store, finds
    # nothing, awaits something else, and only then asks, after the other's read was stored.
    strip_metadata(upstream)
    files = proxy.server.app[FILES]
    source = await files.pages.find_file("tinyalpha", ALPHA)
    first = await files.tail_metadata.read("tinyalpha", ALPHA, source)
    await files.tail_metadata.flush()
    upstream.index.reset_counts()
    again = await files.tail_metadata.read("tinyalpha", ALPHA, source)
    assert first == again == wheel_metadata(ALPHA)
    assert upstream.index.file_hits(ALPHA) == 0


@pytest.mark.parametrize("mode", ["json", "html"])
async def test_head_on_a_cold_file_starts_no_download(proxy, upstream, wheel_bytes, mode):
    upstream.index.mode = mode  # HTML pages state no size: the proxy asks the upstream once
    size = len(wheel_bytes(BIG))
    for _ in range(2):
        status, headers, _ = await fetch(proxy.url + f"bigpkg/{BIG}", "HEAD")
        assert status == 200 and int(headers["Content-Length"]) == size
        assert headers["Accept-Ranges"] == "bytes"
        assert headers["ETag"] == f'"{upstream.index.files[BIG].sha256}"'
    path = upstream.index.files[BIG].url_path
    assert upstream.index.requests[("HEAD", path)] == (1 if mode == "html" else 0)
    assert upstream.index.file_hits(BIG) == 0
    assert await stored_wheel(proxy, "bigpkg", BIG) is None
    etag = headers["ETag"]
    status, _, _ = await fetch(proxy.url + f"bigpkg/{BIG}", "HEAD", **{"If-None-Match": etag})
    assert status == 304 and upstream.index.file_hits(BIG) == 0


async def test_tail_range_on_a_cold_file_fetches_only_the_range(proxy, upstream, wheel_bytes):
    wheel = wheel_bytes(BIG)
    status, headers, body = await fetch(proxy.url + f"bigpkg/{BIG}", Range="bytes=-4096")
    assert status == 206 and body == wheel[-4096:]
    assert headers["Content-Range"] == f"bytes {len(wheel) - 4096}-{len(wheel) - 1}/{len(wheel)}"
    status, _, body = await fetch(proxy.url + f"bigpkg/{BIG}", Range="bytes=100-199")
    assert status == 206 and body == wheel[100:200]
    assert upstream.index.bytes_sent[BIG] == 4096 + 100
    assert await stored_wheel(proxy, "bigpkg", BIG) is None
    # The whole file starts the download, as before.
    status, _, body = await fetch(proxy.url + f"bigpkg/{BIG}")
    assert status == 200 and body == wheel
    assert await stored_wheel(proxy, "bigpkg", BIG) is not None


async def test_whole_wheel_that_disagrees_replaces_served_metadata(
    proxy, upstream, wheel_metadata, caplog
):
    strip_metadata(upstream)
    store = proxy.server.app[STORE]
    wrong = b"Metadata-Version: 2.1\nName: tinyalpha\nVersion: 2.0\n\n"
    await store.put_extracted_metadata("tinyalpha", ALPHA, wrong, hashlib.sha256(wrong).hexdigest())
    with caplog.at_level(logging.WARNING):
        assert (await fetch(proxy.url + f"tinyalpha/{ALPHA}"))[0] == 200
    right = wheel_metadata(ALPHA)
    warning = next(r.getMessage() for r in caplog.records if "differs" in r.getMessage())
    assert hashlib.sha256(wrong).hexdigest() in warning
    assert hashlib.sha256(right).hexdigest() in warning
    assert (await fetch(proxy.url + f"tinyalpha/{ALPHA}.metadata"))[2] == right
    _, _, page = await fetch(proxy.url + "tinyalpha/", Accept=JSON_V1)
    entry = next(f for f in json.loads(page)["files"] if f["filename"] == ALPHA)
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(right).hexdigest()}

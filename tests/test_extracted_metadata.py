"""Wheels whose upstream offers no PEP 658 metadata get it from the proxy once cached."""

import hashlib
import json

import aiohttp
import diskcache

from cacheproxy.protocol.negotiation import JSON_V1
from tests.fakes.clients import uv_pip_install

ALPHA = "tinyalpha-2.0-py3-none-any.whl"


async def fetch(url, **headers):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as resp:
            return resp.status, await resp.read()


async def wheel_entry(proxy, project, filename, accept=JSON_V1):
    _, body = await fetch(proxy.url + f"{project}/", Accept=accept)
    if accept != JSON_V1:
        return body.decode()
    return next(f for f in json.loads(body)["files"] if f["filename"] == filename)


def strip_metadata(upstream):
    for entry in upstream.index.files.values():
        entry.metadata = None


async def test_metadata_hash_is_advertised_once_the_wheel_is_cached(
    make_proxy, upstream, wheel_metadata
):
    # No lookahead: every upstream request is counted below, and it would read ahead.
    proxy = await make_proxy(lookahead=False)
    strip_metadata(upstream)
    # Advertised before the proxy has read it (PEP 714 allows true), its hash once it has.
    assert (await wheel_entry(proxy, "tinyalpha", ALPHA))["core-metadata"] is True
    assert (await fetch(proxy.url + f"tinyalpha/{ALPHA}"))[0] == 200
    entry = await wheel_entry(proxy, "tinyalpha", ALPHA)
    expected = wheel_metadata(ALPHA)
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(expected).hexdigest()}
    assert entry["data-dist-info-metadata"] == entry["core-metadata"]
    html = await wheel_entry(proxy, "tinyalpha", ALPHA, accept="text/html")
    assert f'data-core-metadata="sha256={hashlib.sha256(expected).hexdigest()}"' in html

    status, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}.metadata")
    assert status == 200 and body == expected
    assert upstream.index.requests.total() == upstream.index.page_hits("tinyalpha") + 1


async def test_evicted_metadata_and_wheel_are_rebuilt_on_demand(proxy, upstream, wheel_metadata):
    strip_metadata(upstream)
    await fetch(proxy.url + f"tinyalpha/{ALPHA}")
    # Simulate eviction of both files while the page still advertises the metadata.

    with diskcache.Cache(str(proxy.config.cache_dir / "store")) as cache:
        assert cache.delete(("file", "tinyalpha", ALPHA))
        assert cache.delete(("file", "tinyalpha", ALPHA + ".metadata"))
    status, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}.metadata")
    assert status == 200 and body == wheel_metadata(ALPHA)
    assert upstream.index.file_hits(ALPHA) == 2


async def test_metadata_of_an_uncached_wheel_is_read_from_it(proxy, upstream, wheel_metadata):
    strip_metadata(upstream)
    status, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}.metadata")
    assert status == 200 and body == wheel_metadata(ALPHA)
    assert upstream.index.file_hits(ALPHA) == 1
    assert (await fetch(proxy.url + "tinyalpha/not-a-wheel.tar.gz.metadata"))[0] == 404


async def test_upstream_metadata_is_not_replaced(proxy, upstream, wheel_metadata):
    await fetch(proxy.url + f"tinyalpha/{ALPHA}")
    status, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}.metadata")
    assert status == 200 and body == wheel_metadata(ALPHA)
    assert upstream.index.file_hits(ALPHA + ".metadata") == 1


async def test_uv_uses_extracted_metadata_instead_of_range_reads(proxy, upstream, tmp_path):
    strip_metadata(upstream)
    (await uv_pip_install(proxy.url, tmp_path / "a", "tinyalpha==2.0")).assert_ok()
    upstream.index.reset_counts()
    (await uv_pip_install(proxy.url, tmp_path / "b", "tinyalpha==2.0")).assert_ok()
    assert upstream.index.requests.total() <= 2  # at most the two pages, revalidated

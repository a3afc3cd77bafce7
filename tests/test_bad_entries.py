"""Upstream pages with entries the proxy cannot use: the bad ones are left out (logged and
counted), the rest of the project is served; the file hosts setting limits where files come
from."""

from __future__ import annotations

import hashlib
import json
import logging

import aiohttp
import pytest

from tests.fakes.upstream import JSON_V1, make_app

WHEEL = "tinyalpha-2.0-py3-none-any.whl"
OTHER = "tinyalpha-1.0-py3-none-any.whl"
BAD = [
    {"filename": "../../evil.whl", "url": "../../evil.whl", "hashes": {}},
    {"filename": "", "url": "../", "hashes": {}},
    {"filename": "ctl\x07-1.0.tar.gz", "url": "x.tar.gz", "hashes": {}},
    {"filename": "nourl-1.0.tar.gz", "hashes": {}},
    {"filename": "js-1.0.tar.gz", "url": "javascript:alert(1)", "hashes": {}},
    {"filename": "local-1.0.tar.gz", "url": "file:///etc/passwd", "hashes": {}},
]


async def fetch(url, **headers):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as resp:
            return resp.status, await resp.read()


def entry(upstream, filename, url=None, sha256=None):
    file = upstream.index.files[filename]
    return {
        "filename": filename,
        "url": url or str(upstream.server.make_url(file.url_path)),
        "hashes": {"sha256": sha256 or file.sha256},
    }


def json_page(*files) -> bytes:
    return json.dumps(
        {"meta": {"api-version": "1.1"}, "name": "tinyalpha", "files": files}
    ).encode()


def html_page(*files) -> bytes:
    anchors = "".join(
        f'<a href="{f.get("url", "")}#sha256={f["hashes"].get("sha256", "")}">{f["filename"]}</a>'
        for f in files
    )
    return f"<html><body>{anchors}</body></html>".encode()


@pytest.mark.parametrize("form", ["json", "html"])
async def test_one_bad_entry_does_not_take_the_project_down(
    make_proxy, upstream, wheel_bytes, caplog, form
):
    # No lookahead: the fake upstream serves this one body for any project it is asked for,
    # so a dependency's page would count its bad entries again.
    proxy = await make_proxy(lookahead=False)
    files = [BAD[0], entry(upstream, WHEEL), *BAD[1:]]
    if form == "json":
        upstream.index.page_body = json_page(*files)
    else:
        upstream.index.page_body, upstream.index.page_body_type = html_page(*files), "text/html"
    with caplog.at_level(logging.WARNING, logger="cacheproxy"):
        status, body = await fetch(proxy.url + "tinyalpha/", Accept=JSON_V1)
        assert status == 200, body
        assert [f["filename"] for f in json.loads(body)["files"]] == [WHEEL]
        # Remembered like any page: the next request does not ask the upstream again.
        assert (await fetch(proxy.url + "tinyalpha/", Accept=JSON_V1))[0] == 200
    assert upstream.index.page_hits("tinyalpha") == 1
    assert await fetch(proxy.url + f"tinyalpha/{WHEEL}") == (200, wheel_bytes(WHEEL))
    assert (await fetch(proxy.url + "tinyalpha/evil.whl"))[0] == 404
    warnings = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(warnings) == 1 and "6 entries left out" in warnings[0]
    assert "\n" not in warnings[0]
    metrics = (await fetch(proxy.url.removesuffix("simple/") + "metrics"))[1].decode()
    assert "cacheproxy_page_entries_dropped_total 6.0" in metrics


@pytest.mark.parametrize("form", ["json", "html"])
async def test_a_filename_listed_twice_is_served_from_its_first_listing(
    proxy, upstream, wheel_bytes, form
):
    # The second listing names another file's URL and hash: paired with the first listing's
    # hash (or the first's URL with its hash), every download would fail its check.
    first = entry(upstream, WHEEL)
    second = entry(
        upstream,
        WHEEL,
        url=str(upstream.server.make_url(upstream.index.files[OTHER].url_path)),
        sha256=upstream.index.files[OTHER].sha256,
    )
    if form == "json":
        upstream.index.page_body = json_page(first, second)
    else:
        upstream.index.page_body, upstream.index.page_body_type = (
            html_page(first, second),
            "text/html",
        )
    status, body = await fetch(proxy.url + "tinyalpha/", Accept=JSON_V1)
    listed = json.loads(body)["files"]
    assert status == 200 and len(listed) == 1
    assert listed[0]["hashes"]["sha256"] == hashlib.sha256(wheel_bytes(WHEEL)).hexdigest()
    assert await fetch(proxy.url + f"tinyalpha/{WHEEL}") == (200, wheel_bytes(WHEEL))


@pytest.fixture
async def file_server(aiohttp_server, upstream):
    """The same files on another origin (another port of the same address)."""
    return await aiohttp_server(make_app(upstream.index))


@pytest.mark.parametrize(
    ("file_hosts", "kept"),
    [
        ((), {WHEEL, OTHER}),  # unset: any host the page names
        (("files.invalid",), {WHEEL}),  # set: the upstream's own origin and the patterns
        (("files.invalid", "127.0.0.*"), {WHEEL, OTHER}),
    ],
)
async def test_file_hosts_limit_the_hosts_a_page_may_send_the_proxy_to(
    make_proxy, upstream, file_server, wheel_bytes, file_hosts, kept
):
    proxy = await make_proxy(file_hosts=file_hosts)
    elsewhere = str(file_server.make_url(upstream.index.files[OTHER].url_path))
    upstream.index.page_body = json_page(entry(upstream, WHEEL), entry(upstream, OTHER, elsewhere))
    status, body = await fetch(proxy.url + "tinyalpha/", Accept=JSON_V1)
    assert status == 200
    assert {f["filename"] for f in json.loads(body)["files"]} == kept
    expected = 200 if OTHER in kept else 404
    assert (await fetch(proxy.url + f"tinyalpha/{OTHER}"))[0] == expected
    assert upstream.index.file_hits(OTHER) == (1 if OTHER in kept else 0)

"""The transparent face (http/transparent.py): requests to a package host answered by the
index's own services, pages and documents with the upstream's own URLs, files served only at
the URL the index lists them under. Served here over plain HTTP, the Host header naming the
package host (what the CONNECT front's target stands for), in front of the test upstream."""

from __future__ import annotations

import gzip
import json
import ssl

import aiohttp
import pytest
import trustme
from yarl import URL

from cacheproxy.config import HostPort, NamedIndex
from cacheproxy.http.transparent import create_transparent_app, same_url
from tests.fakes.clock import FakeClock
from tests.fakes.upstream import UpstreamIndex, make_app
from tests.fakes.wheels import build_wheel

JSON_V1 = "application/vnd.pypi.simple.v1+json"
OLD = "tinyalpha-1.0-py3-none-any.whl"
NEW = "tinyalpha-2.0-py3-none-any.whl"


def host_header_target(request) -> tuple[str, int]:
    """The app served alone, without the CONNECT front: the Host header names the target."""
    url = URL(f"//{request.host}")
    return url.host or "", url.explicit_port or (443 if request.scheme == "https" else 80)


class Face:
    """The transparent app of a running proxy, and requests to it as to a package host."""

    def __init__(self, server, proxy) -> None:
        self.server = server
        self.proxy = proxy

    async def get(self, url: str, method: str = "GET", **headers: str):
        """url: the absolute URL a client would ask the package host for."""
        target = URL(url)
        headers["Host"] = f"{target.host}:{target.port}"
        headers.setdefault("Accept-Encoding", "identity")
        path = target.raw_path + (f"?{target.raw_query_string}" if target.raw_query_string else "")
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(
                method, self.server.make_url(path), headers=headers, allow_redirects=False
            ) as resp:
                return resp.status, resp.headers, await resp.read()


@pytest.fixture
def start_face(aiohttp_server):
    async def start(proxy) -> Face:
        server = await aiohttp_server(create_transparent_app(proxy.server.app, host_header_target))
        return Face(server, proxy)

    return start


@pytest.fixture
async def face(make_proxy, start_face) -> Face:
    return await start_face(await make_proxy())


def upstream_file_url(upstream, filename: str) -> str:
    entry = upstream.index.files[filename]
    return str(URL(upstream.simple_url).with_path(entry.url_path))


async def get(url: str, **headers: str):
    headers.setdefault("Accept-Encoding", "identity")
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url, headers=headers) as resp:
            return resp.status, resp.headers, await resp.read()


async def test_pages_list_the_upstreams_urls_and_hashes(face, upstream):
    page_url = upstream.simple_url + "tinyalpha/"
    status, headers, body = await face.get(page_url, Accept=JSON_V1)
    assert status == 200, body
    assert headers["Content-Type"] == JSON_V1
    files = {entry["filename"]: entry for entry in json.loads(body)["files"]}
    assert set(files) == {OLD, NEW}
    for filename, entry in files.items():
        assert entry["url"] == upstream_file_url(upstream, filename)
        assert entry["hashes"] == {"sha256": upstream.index.files[filename].sha256}
    # Nothing names the proxy: neither face's own address.
    for server in (face.server, face.proxy.server):
        assert f":{server.port}/".encode() not in body
    # HTML the same way, with each file's hash on its link.
    status, headers, html = await face.get(page_url, Accept="text/html")
    assert status == 200 and headers["Content-Type"] == "text/html"
    for filename in files:
        sha256 = upstream.index.files[filename].sha256
        assert f'href="{upstream_file_url(upstream, filename)}#sha256={sha256}"'.encode() in html


async def test_page_etag_gzip_and_the_index_face_unchanged(face, upstream):
    page_url = upstream.simple_url + "tinyalpha/"
    status, headers, body = await face.get(page_url, Accept=JSON_V1)
    assert status == 200 and headers["X-Cache"] == "miss"
    status, again, _ = await face.get(
        page_url, Accept=JSON_V1, **{"If-None-Match": headers["ETag"]}
    )
    assert status == 304 and again["ETag"] == headers["ETag"] and again["X-Cache"] == "hit"
    status, zipped, gzipped = await face.get(
        page_url, Accept=JSON_V1, **{"Accept-Encoding": "gzip"}
    )
    assert zipped["Content-Encoding"] == "gzip" and gzip.decompress(gzipped) == body
    # The index face keeps its own relative URLs, from the same stored page.
    status, index_headers, index_body = await get(face.proxy.url + "tinyalpha/", Accept=JSON_V1)
    assert status == 200 and index_headers["ETag"] != headers["ETag"]
    assert {entry["url"] for entry in json.loads(index_body)["files"]} == {OLD, NEW}
    assert upstream.index.page_hits("tinyalpha") == 1


async def test_page_paths_redirect_as_the_index_face_does(face, upstream):
    status, headers, _ = await face.get(upstream.simple_url + "TinyAlpha/")
    assert status == 301 and headers["Location"] == "/simple/tinyalpha/"
    status, headers, _ = await face.get(upstream.simple_url + "tinyalpha")
    assert status == 301 and headers["Location"] == "/simple/tinyalpha/"
    status, _, body = await face.get(upstream.simple_url + "nosuchproject/")
    assert status == 404 and b"no project named nosuchproject" in body


async def test_the_index_root_lists_what_the_cache_holds(face, upstream):
    await face.get(upstream.simple_url + "tinyalpha/")
    status, _, body = await face.get(upstream.simple_url, Accept=JSON_V1)
    assert status == 200
    assert json.loads(body)["projects"] == [{"name": "tinyalpha"}]


async def test_file_at_its_upstream_url_is_then_a_hit_on_the_index_face(
    face, upstream, wheel_bytes
):
    url = upstream_file_url(upstream, NEW)
    status, headers, body = await face.get(url)
    assert status == 200 and body == wheel_bytes(NEW)
    assert headers["X-Cache"] == "miss"
    assert headers["ETag"] == f'"{upstream.index.files[NEW].sha256}"'
    status, headers, body = await get(face.proxy.url + f"tinyalpha/{NEW}")
    assert status == 200 and body == wheel_bytes(NEW) and headers["X-Cache"] == "hit"
    status, headers, body = await face.get(url)
    assert status == 200 and headers["X-Cache"] == "hit"
    assert upstream.index.file_hits(NEW) == 1


async def test_file_from_the_index_face_is_a_hit_on_this_one(face, upstream, wheel_bytes):
    status, _, _ = await get(face.proxy.url + f"tinyalpha/{OLD}")
    assert status == 200
    url = upstream_file_url(upstream, OLD)
    status, headers, body = await face.get(url)
    assert status == 200 and body == wheel_bytes(OLD) and headers["X-Cache"] == "hit"
    status, headers, body = await face.get(url, "HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) == len(wheel_bytes(OLD))
    status, headers, body = await face.get(url, Range="bytes=10-19")
    assert status == 206 and body == wheel_bytes(OLD)[10:20]
    etag = headers["ETag"]
    assert (await face.get(url, **{"If-None-Match": etag}))[0] == 304
    assert upstream.index.file_hits(OLD) == 1


async def test_a_file_is_served_only_at_the_url_the_index_lists(face, upstream):
    listed = URL(upstream_file_url(upstream, NEW))
    status, _, body = await face.get(str(listed.with_path(f"/files/zz/{NEW}")))
    assert status == 404
    assert body.decode() == f"the index lists tinyalpha's {NEW} at another URL\n"
    status, _, body = await face.get(
        str(listed.with_path("/files/00/tinyalpha-9.0-py3-none-any.whl"))
    )
    assert status == 404 and body.startswith(b"the index lists no such file")
    status, _, body = await face.get(str(listed.with_path("/robots.txt")))
    assert status == 404 and body.startswith(b"not a distribution file name")
    status, _, body = await face.get(str(listed.with_path("/files/00/nosuchproject-1.0.tar.gz")))
    assert status == 404 and body.startswith(b"the index lists no such file")
    downloads = [path for (_, path) in upstream.index.requests if path.startswith("/files/")]
    assert downloads == []


async def test_a_corrupt_file_is_not_stored(face, upstream):
    upstream.index.corrupt.add(OLD)
    url = upstream_file_url(upstream, OLD)
    with pytest.raises(aiohttp.ClientPayloadError):
        await face.get(url)
    upstream.index.corrupt.clear()
    status, headers, _ = await face.get(url)
    assert status == 200 and headers["X-Cache"] == "miss"


async def test_metadata_beside_its_wheel(face, upstream, wheel_metadata):
    url = upstream_file_url(upstream, NEW) + ".metadata"
    status, _, body = await face.get(url)
    assert status == 200 and body == wheel_metadata(NEW)
    listed = URL(upstream_file_url(upstream, NEW))
    status, _, _ = await face.get(str(listed.with_path(f"/files/zz/{NEW}.metadata")))
    assert status == 404


async def test_metadata_the_upstream_lacks_is_read_from_the_wheel(
    make_proxy, start_face, upstream, wheelhouse, wheel_metadata
):
    upstream.index.add_wheel(wheelhouse[NEW], with_metadata=False)
    face = await start_face(await make_proxy())
    status, _, body = await face.get(upstream.simple_url + "tinyalpha/", Accept=JSON_V1)
    entry = next(e for e in json.loads(body)["files"] if e["filename"] == NEW)
    assert entry["core-metadata"] is True  # as the index face advertises it
    status, _, body = await face.get(entry["url"] + ".metadata")
    assert status == 200 and body == wheel_metadata(NEW)


async def test_json_api_keeps_the_upstreams_urls(face, upstream):
    status, headers, body = await face.get(
        upstream.simple_url.replace("/simple/", "/pypi/tinyalpha/json")
    )
    assert status == 200 and headers["Content-Type"] == "application/json"
    document = json.loads(body)
    urls = [item["url"] for item in document["urls"]]
    assert urls == [upstream_file_url(upstream, NEW)]
    released = {i["url"] for items in document["releases"].values() for i in items}
    assert released == {upstream_file_url(upstream, OLD), upstream_file_url(upstream, NEW)}
    status, _, body = await face.get(
        upstream.simple_url.replace("/simple/", "/pypi/tinyalpha/1.0/json")
    )
    assert status == 200
    assert [item["url"] for item in json.loads(body)["urls"]] == [upstream_file_url(upstream, OLD)]
    # The index face's documents still point at the proxy.
    _, _, body = await get(face.proxy.url.replace("/simple/", "/pypi/tinyalpha/json"))
    assert json.loads(body)["urls"][0]["url"].startswith(face.proxy.url)


async def test_denied_project_and_version_are_refused_here_too(make_proxy, start_face, upstream):
    face = await start_face(await make_proxy(deny=("tinyalpha>=2", "beta-helper")))
    _, _, body = await face.get(upstream.simple_url + "tinyalpha/", Accept=JSON_V1)
    assert [entry["filename"] for entry in json.loads(body)["files"]] == [OLD]
    status, _, body = await face.get(upstream_file_url(upstream, NEW))
    assert status == 403 and b"deny tinyalpha>=2" in body
    assert (await face.get(upstream_file_url(upstream, OLD)))[0] == 200
    status, _, body = await face.get(upstream.simple_url + "beta-helper/")
    assert status == 403 and b"denied" in body
    helper = "beta_helper-1.0-py3-none-any.whl"
    status, _, body = await face.get(upstream_file_url(upstream, helper))
    assert status == 403 and b"denied" in body
    assert upstream.index.file_hits(NEW) == 0 and upstream.index.file_hits(helper) == 0


async def test_a_file_taken_down_upstream_is_gone_here_too(make_proxy, start_face, upstream):
    clock = FakeClock()
    face = await start_face(await make_proxy(clock=clock, page_ttl=60))
    url = upstream_file_url(upstream, NEW)
    assert (await face.get(url))[0] == 200
    del upstream.index.files[NEW]
    clock.now += 61
    await face.get(upstream.simple_url + "tinyalpha/")  # the page is revalidated
    for suffix in ("", ".metadata"):
        status, _, body = await face.get(url + suffix)
        assert status == 410 and b"was removed upstream" in body


async def test_a_host_that_is_no_package_host_is_not_served(face, upstream):
    status, _, body = await face.get("http://127.0.0.9:8443/simple/tinyalpha/")
    assert status == 404 and body == b"127.0.0.9:8443 is not a package host of this proxy\n"


async def test_a_named_indexs_host_routes_to_that_index(
    make_proxy, start_face, aiohttp_server, upstream, tmp_path
):
    vendor = UpstreamIndex()
    wheel = build_wheel(tmp_path / "vendor", "tinyalpha", "9.0")
    vendor.add_wheel(wheel)
    server = await aiohttp_server(make_app(vendor))
    vendor_url = str(server.make_url("/simple/"))
    index = NamedIndex(name="vendor", upstream=vendor_url)
    face = await start_face(await make_proxy(indexes=(index,)))
    _, _, body = await face.get(vendor_url + "tinyalpha/", Accept=JSON_V1)
    files = json.loads(body)["files"]
    assert [entry["filename"] for entry in files] == [wheel.name]
    file_url = str(server.make_url(vendor.files[wheel.name].url_path))
    assert files[0]["url"] == file_url
    status, _, data = await face.get(file_url)
    assert status == 200 and data == wheel.read_bytes()
    # Kept in the named index's own store: a hit on its index face.
    base = face.proxy.url.removesuffix("simple/")
    _, headers, _ = await get(base + f"index/vendor/simple/tinyalpha/{wheel.name}")
    assert headers["X-Cache"] == "hit"
    # The main index's host still answers with the main index.
    _, _, body = await face.get(upstream.simple_url + "tinyalpha/", Accept=JSON_V1)
    assert {entry["filename"] for entry in json.loads(body)["files"]} == {OLD, NEW}
    # A file of the main index is not found on the named index's host.
    main_file_on_vendor = URL(upstream_file_url(upstream, NEW)).with_port(server.port)
    status, _, body = await face.get(str(main_file_on_vendor))
    assert status == 404 and body.startswith(b"the index lists no such file")


async def test_a_file_host_apart_from_the_index_is_served_for_the_main_index(
    make_proxy, start_face, aiohttp_server, upstream, wheel_bytes
):
    """Files on a host of their own (as the public index keeps them), asked for before any page
    was: found through the main index's page, which lists them there."""
    files = UpstreamIndex(files=dict(upstream.index.files))
    server = await aiohttp_server(make_app(files))
    elsewhere = str(server.make_url(upstream.index.files[NEW].url_path))
    upstream.index.url_overrides[NEW] = elsewhere
    host = HostPort("127.0.0.1", server.port)
    face = await start_face(await make_proxy(intercept_host=(host,)))
    status, _, body = await face.get(elsewhere)
    assert status == 200 and body == wheel_bytes(NEW)
    assert files.file_hits(NEW) == 1 and upstream.index.file_hits(NEW) == 0
    # At the URL another index lists it at (a lock made against the public index, this
    # upstream a mirror of it): the file the index lists under that name, from the cache.
    status, _, body = await face.get(upstream_file_url(upstream, NEW))
    assert status == 200 and body == wheel_bytes(NEW)
    assert files.file_hits(NEW) == 1 and upstream.index.file_hits(NEW) == 0
    # On the host the index lists it on, only at the path it lists.
    moved = URL(elsewhere).with_path("/other/place/" + NEW)
    status, _, body = await face.get(str(moved))
    assert status == 404 and b"at another URL" in body


def test_same_url_compares_scheme_host_port_and_path():
    asked = URL("https://files.example/packages/a%2Bb/x-1.0.tar.gz")
    assert same_url("https://FILES.example:443/packages/a+b/x-1.0.tar.gz", asked)
    assert same_url("https://user:secret@files.example/packages/a%2Bb/x-1.0.tar.gz", asked)
    assert not same_url("http://files.example/packages/a+b/x-1.0.tar.gz", asked)
    assert not same_url("https://files.example:8443/packages/a+b/x-1.0.tar.gz", asked)
    assert not same_url("https://files.example/packages/a+b/x-2.0.tar.gz", asked)
    assert not same_url("https://other.example/packages/a+b/x-1.0.tar.gz", asked)


def test_upstream_urls_are_rendered_without_credentials():
    from cacheproxy.protocol.page import ProjectPage, with_upstream_urls

    page = ProjectPage(
        {"name": "x", "files": [{"filename": "x-1.0.tar.gz", "url": "x-1.0.tar.gz"}]},
        {"x-1.0.tar.gz": "https://user:secret@files.example/p/x-1.0.tar.gz"},
    )
    entry = with_upstream_urls(page).data["files"][0]
    assert entry["url"] == "https://files.example/p/x-1.0.tar.gz"
    assert page.data["files"][0]["url"] == "x-1.0.tar.gz"  # the page itself is unchanged


async def test_over_tls_a_file_url_is_an_https_url(make_proxy, aiohttp_server, upstream):
    """Served over TLS, as the CONNECT front serves it, the URL asked for is https: a file the
    index lists at its http URL is not that file."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    proxy = await make_proxy()
    server = await aiohttp_server(
        create_transparent_app(proxy.server.app, host_header_target), ssl=server_context
    )
    host = URL(upstream.simple_url).authority
    listed = URL(upstream_file_url(upstream, NEW))

    async def fetch(path: str, **headers: str):
        url = server.make_url(path).with_scheme("https")
        async with aiohttp.ClientSession() as session:
            async with session.get(
                url, ssl=client_context, headers={"Host": host, **headers}
            ) as resp:
                return resp.status, await resp.read()

    status, body = await fetch("/simple/tinyalpha/", Accept=JSON_V1)
    assert status == 200
    assert {entry["url"] for entry in json.loads(body)["files"]} >= {str(listed)}
    status, body = await fetch(listed.raw_path)
    assert status == 404 and b"at another URL" in body

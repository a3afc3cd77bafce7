"""The PyPI JSON API through the proxy: cached like pages, file URLs pointed at the proxy."""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import ClientSession

from cacheproxy.config import Config, NamedIndex
from cacheproxy.http.keys import STORE
from tests.fakes.clock import FakeClock
from tests.test_ops import metric

WHEEL = "tinyalpha-2.0-py3-none-any.whl"
DOC = "/pypi/tinyalpha/json"


def api_hits(upstream, path: str = DOC) -> int:
    return upstream.index.requests[("GET", path)]


async def get_json(proxy, path: str, **headers: str):
    base = proxy.url.removesuffix("/simple/")
    async with ClientSession() as session:
        async with session.get(base + path, headers=headers) as resp:
            body = await resp.json() if resp.status == 200 else await resp.text()
            return resp.status, resp.headers.copy(), body


async def test_project_document_is_proxied_with_file_urls_of_the_proxy(proxy, upstream):
    status, headers, doc = await get_json(proxy, DOC)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert doc["info"]["name"] == "tinyalpha" and doc["info"]["version"] == "2.0"
    assert set(doc["releases"]) == {"1.0", "2.0"}
    base = proxy.url  # .../simple/
    for files in [doc["urls"], *doc["releases"].values()]:
        for item in files:
            assert item["url"] == f"{base}tinyalpha/{item['filename']}"
            assert item["digests"]["sha256"] == upstream.index.files[item["filename"]].sha256
            assert item["size"] == len(upstream.index.files[item["filename"]].data)
    assert [f["filename"] for f in doc["urls"]] == [WHEEL]


async def test_a_download_through_a_rewritten_url_comes_from_the_proxy(proxy, upstream):
    _, _, doc = await get_json(proxy, DOC)
    url = doc["urls"][0]["url"]
    async with ClientSession() as session:
        async with session.get(url) as resp:
            assert resp.status == 200
            data = await resp.read()
    assert hashlib.sha256(data).hexdigest() == doc["urls"][0]["digests"]["sha256"]
    assert upstream.index.file_hits(WHEEL) == 1


async def test_release_document(proxy, upstream):
    status, _, doc = await get_json(proxy, "/pypi/tinyalpha/1.0/json")
    assert status == 200 and doc["info"]["version"] == "1.0" and "releases" not in doc
    assert [f["filename"] for f in doc["urls"]] == ["tinyalpha-1.0-py3-none-any.whl"]
    status, _, _ = await get_json(proxy, "/pypi/tinyalpha/9.9/json")
    assert status == 404
    status, _, body = await get_json(proxy, "/pypi/tinyalpha/..%2F/json")
    assert status == 400 and "not a valid version" in body


async def test_cached_within_the_ttl_and_names_normalised(proxy, upstream):
    for path in (DOC, DOC, "/pypi/TinyAlpha/json"):
        status, headers, _ = await get_json(proxy, path)
        assert status == 200
    assert headers["X-Cache"] == "hit"
    assert api_hits(upstream) == 1


async def test_outcomes_are_counted_in_the_metrics_as_json_api(proxy, upstream):
    for path in (DOC, DOC, "/pypi/tinyalpha/1.0/json"):
        await get_json(proxy, path)
    async with ClientSession() as session:
        async with session.get(proxy.url.removesuffix("/simple/") + "/metrics") as resp:
            text = await resp.text()
    outcomes = {
        o: metric(text, "cacheproxy_cache_outcomes_total", kind="json-api", outcome=o)
        for o in ("miss", "hit")
    }
    assert outcomes == {"miss": 2, "hit": 1}  # the release document is fetched on its own
    assert metric(text, "cacheproxy_cache_outcomes_total", kind="page") == 0


async def test_revalidated_after_the_ttl(make_proxy, upstream):
    clock = FakeClock()
    proxy = await make_proxy(clock=clock, page_ttl=60)
    _, first, _ = await get_json(proxy, DOC)
    clock.now += 61
    status, headers, _ = await get_json(proxy, DOC)
    assert status == 200 and headers["X-Cache"] == "revalidated"
    assert headers["ETag"] == first["ETag"]
    assert api_hits(upstream) == 2
    # The client's own revalidation is answered by the proxy.
    status, _, _ = await get_json(proxy, DOC, **{"If-None-Match": first["ETag"]})
    assert status == 304 and api_hits(upstream) == 2


async def test_stale_when_the_upstream_is_down(make_proxy, upstream):
    clock = FakeClock()
    proxy = await make_proxy(clock=clock, page_ttl=60, retries=0)
    await get_json(proxy, DOC)
    await upstream.stop()
    clock.now += 61
    status, headers, doc = await get_json(proxy, DOC)
    assert status == 200 and headers["X-Cache"] == "stale"
    assert "stale" in headers["Warning"] and doc["info"]["name"] == "tinyalpha"
    status, _, body = await get_json(proxy, "/pypi/beta-helper/json")
    assert status == 502 and "cannot connect to upstream" in body


async def test_an_upstream_error_is_not_cached(make_proxy, upstream):
    proxy = await make_proxy(retries=0)
    upstream.index.page_status = 500
    status, _, body = await get_json(proxy, DOC)
    assert status == 502 and "500" in body
    upstream.index.page_status = None
    assert (await get_json(proxy, DOC))[0] == 200


async def test_none_upstream_is_negative_cached(make_proxy, upstream):
    clock = FakeClock()
    proxy = await make_proxy(clock=clock, negative_ttl=300)
    for _ in range(3):
        status, headers, body = await get_json(proxy, "/pypi/nosuch/json")
        assert status == 404 and "no JSON API document for nosuch" in body
    assert int(headers["Cache-Control"].split("=")[1].split(",")[0]) > 0
    assert api_hits(upstream, "/pypi/nosuch/json") == 1
    clock.now += 301
    await get_json(proxy, "/pypi/nosuch/json")
    assert api_hits(upstream, "/pypi/nosuch/json") == 2


async def test_an_upstream_without_a_json_api(make_proxy, upstream):
    upstream.index.json_api = False
    proxy = await make_proxy()
    assert (await get_json(proxy, DOC))[0] == 404
    assert (await get_json(proxy, DOC))[0] == 404
    assert api_hits(upstream) == 1
    # Configured off: not even asked.
    off = await make_proxy(json_api_url="off", cache_dir=proxy.config.cache_dir / "off")
    status, _, body = await get_json(off, "/pypi/beta-helper/json")
    assert status == 404 and "the upstream has no JSON API" in body
    assert api_hits(upstream, "/pypi/beta-helper/json") == 0


async def test_paths_clients_build_from_the_index_url(proxy, upstream):
    # urljoin(".../simple/", "pypi") and pip-tools' ".../simple/" minus "simple/".
    for path in (
        "/simple/pypi/tinyalpha/json",
        "/tinyalpha/json",
        "/simple/pypi/tinyalpha/2.0/json",
    ):
        status, _, doc = await get_json(proxy, path)
        assert status == 200 and doc["info"]["name"] == "tinyalpha", path


async def test_named_index(make_proxy, upstream):
    index = NamedIndex(name="team", upstream=upstream.simple_url)
    proxy = await make_proxy(indexes=(index,))
    for path in ("/index/team/pypi/tinyalpha/json", "/index/team/simple/pypi/tinyalpha/json"):
        status, _, doc = await get_json(proxy, path)
        assert status == 200
        base = proxy.url.removesuffix("/simple/") + "/index/team/simple/"
        assert doc["urls"][0]["url"] == f"{base}tinyalpha/{WHEEL}"
    async with ClientSession() as session:
        async with session.get(doc["urls"][0]["url"]) as resp:
            assert resp.status == 200


async def test_no_credential_in_the_output(make_proxy, upstream):
    upstream.index.required_auth = ("alice", "s3cret-pw")
    url = upstream.simple_url.replace("http://", "http://alice:s3cret-pw@")
    # An upstream that echoes the credentials it was sent into its links (some do).
    upstream.index.url_overrides[WHEEL] = url.replace("/simple/", "/files/xx/" + WHEEL)
    proxy = await make_proxy(upstream=url)
    async with ClientSession() as session:
        async with session.get(proxy.url.removesuffix("/simple/") + DOC) as resp:
            assert resp.status == 200
            text = await resp.text()
        async with session.get(proxy.url.removesuffix("/simple/") + "/pypi/nosuch/json") as r:
            assert r.status == 404
            text += await r.text()
    assert "s3cret-pw" not in text and "alice" not in text
    assert api_hits(upstream) == 1


def test_json_api_base_is_derived_from_the_upstream():
    assert str(Config(upstream="https://idx.example/simple/").json_api_base) == (
        "https://idx.example/pypi/"
    )
    assert str(Config(upstream="https://u:p@idx.example/a/simple").json_api_base) == (
        "https://idx.example/a/pypi/"
    )
    assert Config(upstream="https://idx.example/root/+simple/").json_api_base is None
    assert (
        str(
            Config(
                upstream="https://idx.example/simple/", json_api_url="https://j.example/x"
            ).json_api_base
        )
        == "https://j.example/x/"
    )
    assert Config(json_api_url="off").json_api_base is None
    named = Config(json_api_url="https://j.example/").for_index(
        NamedIndex(name="t", upstream="https://other.example/simple/")
    )
    assert str(named.json_api_base) == "https://other.example/pypi/"


def test_rewriting_scrubs_credentials_and_drops_unservable_files():
    from cacheproxy.jsonapi.document import rewritten

    data = {
        "info": {"name": "p", "home_page": "https://u:pw@idx.example/p/"},
        "urls": [{"filename": "p-1.tar.gz", "url": "https://u:pw@files.example/p-1.tar.gz"}],
        "releases": {"1": [{"filename": "../up.whl", "url": "x"}, {"url": "no name"}]},
    }
    out = rewritten(data, lambda name: f"http://proxy/simple/p/{name}")
    assert out["urls"] == [{"filename": "p-1.tar.gz", "url": "http://proxy/simple/p/p-1.tar.gz"}]
    assert out["releases"] == {"1": []}
    assert "pw" not in str(out) and out["info"]["home_page"] == "https://***@idx.example/p/"


async def test_concurrent_requests_share_one_fetch(proxy, upstream):
    upstream.index.page_delay = 0.2
    answers = await asyncio.gather(*(get_json(proxy, DOC) for _ in range(5)))
    assert [status for status, _, _ in answers] == [200] * 5
    assert api_hits(upstream) == 1


async def test_offline_serves_what_is_cached_and_nothing_else(make_proxy, upstream, tmp_path):
    await get_json(await make_proxy(), DOC)
    offline = await make_proxy(offline=True)
    status, _, doc = await get_json(offline, DOC)
    assert status == 200 and doc["info"]["name"] == "tinyalpha"
    status, _, body = await get_json(offline, "/pypi/beta-helper/json")
    assert status == 404 and "offline" in body
    assert api_hits(upstream) == 1 and api_hits(upstream, "/pypi/beta-helper/json") == 0


async def test_a_refusal_is_passed_on_and_not_cached(proxy, upstream):
    upstream.index.required_auth = ("alice", "pw")
    status, _, body = await get_json(proxy, DOC)
    assert status == 401 and "credentials" in body
    upstream.index.required_auth = None
    assert (await get_json(proxy, DOC))[0] == 200


async def test_purge_forgets_the_documents(proxy, upstream):
    await get_json(proxy, DOC)
    store = proxy.server.app[STORE]
    await asyncio.to_thread(store.purge_project, "tinyalpha")
    status, headers, _ = await get_json(proxy, DOC)
    assert status == 200 and headers["X-Cache"] == "miss"
    assert api_hits(upstream) == 2


async def test_install_rules_apply_to_the_json_api(make_proxy, upstream):
    upstream.index.files[WHEEL].upload_time = "2030-01-01T00:00:00.000000Z"
    snapshot = await make_proxy(exclude_newer=1893456000.0)  # 2030-01-01: 2.0 comes after it
    status, _, doc = await get_json(snapshot, DOC)
    assert status == 200
    assert doc["urls"] == [] and doc["releases"]["2.0"] == []
    assert [f["filename"] for f in doc["releases"]["1.0"]] == ["tinyalpha-1.0-py3-none-any.whl"]
    denied = await make_proxy(deny=("tinyalpha",))
    status, _, body = await get_json(denied, DOC)
    assert status == 403 and "denied" in body and "tinyalpha" in body

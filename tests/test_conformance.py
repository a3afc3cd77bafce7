"""The proxy's pages against the upstream's, field by field: only URLs may differ."""

import json
from urllib.parse import urldefrag

import aiohttp
import pytest

from cacheproxy.protocol.negotiation import JSON_V1
from cacheproxy.protocol.parse import parse_html_page

PROJECTS = ["tinyalpha", "beta-helper", "bigpkg"]
EXTRAS = {
    "project-status": {"status": "deprecated", "reason": "use <tinybeta> instead"},
    "tracks": ["https://elsewhere.example/simple/tinyalpha/"],
    "alternate-locations": ["https://mirror.example/simple/tinyalpha/"],
    "_private-key": {"kept": [1, 2]},
}


@pytest.fixture
def rich_upstream(upstream):
    """Every optional field of the Simple API set somewhere."""
    index = upstream.index
    index.page_extras = EXTRAS
    alpha = index.files["tinyalpha-1.0-py3-none-any.whl"]
    alpha.yanked = "broken <build> & more"
    alpha.gpg_sig = False
    alpha.metadata = None
    beta = index.files["beta_helper-1.0-py3-none-any.whl"]
    beta.provenance = b'{"attestation_bundles": []}'
    beta.gpg_sig = True
    return upstream


async def get(url, accept):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Accept": accept}) as resp:
            assert resp.status == 200, url
            return await resp.read()


def as_advertised(files):
    """The upstream's entries as the proxy shows them: every wheel the upstream gives no
    metadata for is advertised with `true` (the proxy reads it from the wheel on request)."""
    for entry in files:
        if entry["filename"].endswith(".whl") and not entry.get("core-metadata"):
            entry["core-metadata"] = entry["data-dist-info-metadata"] = True
    return files


def without_urls(page):
    page = dict(page)
    files = []
    for entry in page.pop("files"):
        entry = dict(entry)
        entry.pop("url")
        if "provenance" in entry:
            assert entry.pop("provenance").endswith(".provenance")
        files.append(entry)
    return page, files


@pytest.mark.parametrize("project", PROJECTS)
async def test_json_pages_match_field_by_field(proxy, rich_upstream, project):
    upstream_page = json.loads(await get(rich_upstream.simple_url + f"{project}/", JSON_V1))
    proxy_page = json.loads(await get(proxy.url + f"{project}/", JSON_V1))
    expected_page, expected_files = without_urls(upstream_page)
    assert without_urls(proxy_page) == (expected_page, as_advertised(expected_files))
    for entry in proxy_page["files"]:
        assert entry["url"] == entry["filename"]  # relative: downloads come through the proxy


def anchors(body: bytes, base: str, project: str):
    page = parse_html_page(body, base, project)
    return page.data, {
        f["filename"]: {k: v for k, v in f.items() if k not in ("url", "provenance")}
        for f in page.data["files"]
    }


@pytest.mark.parametrize("project", PROJECTS)
async def test_html_pages_match_field_by_field(proxy, rich_upstream, project):
    rich_upstream.index.mode = "html"
    up_data, up_files = anchors(
        await get(rich_upstream.simple_url + f"{project}/", "text/html"),
        rich_upstream.simple_url,
        project,
    )
    px_body = await get(proxy.url + f"{project}/", "text/html")
    px_data, px_files = anchors(px_body, proxy.url, project)
    assert px_files == {e["filename"]: e for e in as_advertised(list(up_files.values()))}
    for key in ("meta", "project-status", "tracks", "alternate-locations", "versions"):
        assert px_data.get(key) == up_data.get(key), key
    for href in px_body.decode().split('href="')[1:]:
        assert "//" not in urldefrag(href.split('"')[0])[0]  # relative links only


async def test_html_only_upstream_served_as_json_with_what_can_be_known(
    proxy, rich_upstream, wheel_bytes
):
    rich_upstream.index.mode = "html"
    page = json.loads(await get(proxy.url + "tinyalpha/", JSON_V1))
    assert page["versions"] == ["1.0", "2.0"]
    assert page["project-status"] == EXTRAS["project-status"]
    assert page["tracks"] == EXTRAS["tracks"]
    files = {f["filename"]: f for f in page["files"]}
    wheel = "tinyalpha-2.0-py3-none-any.whl"
    assert "size" not in files[wheel]
    await get(proxy.url + f"tinyalpha/{wheel}", "*/*")
    files = {
        f["filename"]: f for f in json.loads(await get(proxy.url + "tinyalpha/", JSON_V1))["files"]
    }
    assert files[wheel]["size"] == len(wheel_bytes(wheel))
    assert files[wheel]["upload-time"] == "2024-01-02T03:04:05.000000Z"
    assert files["tinyalpha-1.0-py3-none-any.whl"]["yanked"] == "broken <build> & more"


async def test_provenance_is_proxied_like_a_file(proxy, rich_upstream):
    page = json.loads(await get(proxy.url + "beta-helper/", JSON_V1))
    (entry,) = page["files"]
    assert entry["provenance"] == "beta_helper-1.0-py3-none-any.whl.provenance"
    for _ in range(2):
        body = await get(proxy.url + "beta-helper/" + entry["provenance"], "*/*")
        assert json.loads(body) == {"attestation_bundles": []}
    assert rich_upstream.index.file_hits(entry["provenance"]) == 1

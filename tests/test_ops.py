"""Status page, metrics, health and readiness."""

import asyncio
import json
import re

import aiohttp
import pytest

from tests.fakes.process import ProxyProcess

ALPHA = "tinyalpha-2.0-py3-none-any.whl"


async def get(url):
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            return resp.status, resp.headers, (await resp.read()).decode(errors="replace")


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_metrics_count_hits_misses_and_bytes(proxy, upstream, wheel_bytes):
    root = proxy.url.removesuffix("simple/")
    for _ in range(3):
        assert (await get(proxy.url + f"tinyalpha/{ALPHA}"))[0] == 200
    missing = [await get(proxy.url + "no-such-project/") for _ in range(2)]
    assert [(status, headers["X-Cache"]) for status, headers, _ in missing] == [
        (404, "miss"),
        (404, "hit"),  # the negative entry
    ]
    status, headers, text = await get(root + "metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    size = len(wheel_bytes(ALPHA))
    assert metric(text, "cacheproxy_cache_outcomes_total", kind="file", outcome="miss") == 1
    assert metric(text, "cacheproxy_cache_outcomes_total", kind="file", outcome="hit") == 2
    assert metric(text, "cacheproxy_file_bytes_served_total", source="cache") == 2 * size
    assert metric(text, "cacheproxy_file_bytes_served_total", source="upstream") == size
    assert metric(text, "cacheproxy_requests_total", status="404") == 2
    assert metric(text, "cacheproxy_cache_outcomes_total", kind="page", outcome="hit") == 1
    # tinyalpha's page is never asked for; the two 404s are the only page outcomes
    assert metric(text, "cacheproxy_cache_outcomes_total", kind="page") == 2
    assert metric(text, "cacheproxy_upstream_requests_total", kind="file", result="200") == 1
    assert metric(text, "cacheproxy_cache_bytes") >= size
    assert metric(text, "cacheproxy_downloads_in_flight") == 0


async def test_status_page_agrees_with_metrics(proxy, upstream):
    root = proxy.url.removesuffix("simple/")
    for _ in range(4):
        await get(proxy.url + f"tinyalpha/{ALPHA}")
    status, headers, page = await get(root)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert f'<code id="index-url">{proxy.url}</code>' in page
    assert re.search(r'id="hit-ratio">75\.0%<', page)  # 3 hits of 4 file requests
    assert "<td>tinyalpha</td><td class=n>4</td>" in page
    assert 'id="upstream-health" class="">reachable' in page
    _, _, text = await get(root + "metrics")
    hits = metric(text, "cacheproxy_cache_outcomes_total", kind="file", outcome="hit")
    misses = metric(text, "cacheproxy_cache_outcomes_total", kind="file", outcome="miss")
    assert hits / (hits + misses) == 0.75


async def test_upstream_errors_show_on_the_status_page(make_proxy, upstream):
    proxy = await make_proxy(retries=0)
    await upstream.stop()
    await get(proxy.url + "tinyalpha/")
    _, _, page = await get(proxy.url.removesuffix("simple/"))
    assert "cannot connect to upstream" in page
    assert "unreachable: serving from cache" in page


async def test_health_and_ready(proxy):
    root = proxy.url.removesuffix("simple/")
    assert (await get(root + "health"))[0] == 200
    status, _, body = await get(root + "ready")
    assert status == 200 and '"cache_writable": true' in body


async def test_json_access_log_lines(upstream, tmp_path):
    proxy = await asyncio.to_thread(
        ProxyProcess, tmp_path / "cache", upstream.simple_url, "--log-format", "json"
    )
    try:
        for _ in range(2):
            assert (await get(proxy.url + f"tinyalpha/{ALPHA}"))[0] == 200
    finally:
        await asyncio.to_thread(proxy.stop)
    records = [json.loads(line) for line in proxy.log if line.strip()]
    access = [r for r in records if r["logger"] == "cacheproxy.http.access"]
    outcomes = [(r["path"], r["status"], r["outcome"]) for r in access]
    path = f"/simple/tinyalpha/{ALPHA}"
    assert outcomes == [(path, 200, "miss"), (path, 200, "hit")]
    assert all(r["bytes"] > 0 and r["ms"] >= 0 for r in access)


@pytest.mark.parametrize(
    ("public_url", "shown"),
    [
        ("https://pypi-cache.example.org/team/", "https://pypi-cache.example.org/team/simple/"),
        (None, "http://forged.example/simple/"),  # unset: the Host header, as before
    ],
)
async def test_status_page_prefers_the_public_url_to_the_host_header(make_proxy, public_url, shown):
    proxy = await make_proxy(public_url=public_url)
    async with aiohttp.ClientSession() as session:
        async with session.get(
            proxy.url.removesuffix("simple/"), headers={"Host": "forged.example"}
        ) as resp:
            status, body = resp.status, await resp.read()
    assert status == 200
    assert shown in body.decode()
    if public_url:
        assert "forged.example" not in body.decode()

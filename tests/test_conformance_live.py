"""Opt-in (-m internet): the proxy's pages against the real default upstream's, field by
field, for every project in the shared workloads. Only URLs may differ."""

import json
from pathlib import Path

import aiohttp
import pytest

from cacheproxy.config import default_upstream
from cacheproxy.protocol.names import normalize_project
from cacheproxy.protocol.negotiation import JSON_V1
from tests.test_conformance import without_urls

pytestmark = pytest.mark.internet

WORKLOADS = Path(__file__).resolve().parent.parent.parent / "shared" / "workloads"


def workload_projects() -> list[str]:
    names = set()
    for path in WORKLOADS.glob("*.txt"):
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                names.add(normalize_project(line.split("[")[0].split("=")[0].split(">")[0]))
    return sorted(names)


async def get_json(session, url):
    async with session.get(url, headers={"Accept": JSON_V1}) as resp:
        assert resp.status == 200, url
        return json.loads(await resp.read())


@pytest.mark.parametrize("project", workload_projects())
async def test_live_json_page_matches_upstream(make_proxy, project):
    proxy = await make_proxy(upstream=default_upstream())
    async with aiohttp.ClientSession() as session:
        upstream_page = await get_json(session, default_upstream() + f"{project}/")
        proxy_page = await get_json(session, proxy.url + f"{project}/")
    upstream_meta, upstream_files = without_urls(upstream_page)
    proxy_meta, proxy_files = without_urls(proxy_page)
    upstream_meta["meta"].pop("_last-serial", None)  # may move between the two requests
    proxy_meta["meta"].pop("_last-serial", None)
    assert proxy_meta == upstream_meta
    assert len(proxy_files) == len(upstream_files)
    for ours, theirs in zip(proxy_files, upstream_files, strict=True):
        # Only addition allowed: the legacy spelling of core-metadata for old clients.
        if "core-metadata" in theirs:
            theirs.setdefault("data-dist-info-metadata", theirs["core-metadata"])
        assert ours == theirs

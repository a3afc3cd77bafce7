"""Opt-in (-m internet): the install rules in front of the real default upstream."""

import json
import time

import aiohttp
import pytest

from cacheproxy.config import default_upstream, parse_timestamp
from cacheproxy.pages.rules import parse_upload_time
from cacheproxy.protocol.negotiation import JSON_V1
from tests.fakes.clients import uv_pip_install
from tests.test_installs import installed

pytestmark = pytest.mark.internet

SNAPSHOT = "2023-06-01T00:00:00Z"


async def page_files(url):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Accept": JSON_V1}) as resp:
            assert resp.status == 200, url
            return json.loads(await resp.read())["files"]


async def test_live_snapshot_installs_what_uv_exclude_newer_installs(make_proxy, tmp_path):
    reference = tmp_path / "reference"
    result = await uv_pip_install(
        default_upstream(), reference, "idna", "packaging", extra_args=("--exclude-newer", SNAPSHOT)
    )
    result.assert_ok()
    proxy = await make_proxy(upstream=default_upstream(), exclude_newer=parse_timestamp(SNAPSHOT))
    through = tmp_path / "through"
    (await uv_pip_install(proxy.url, through, "idna", "packaging")).assert_ok()
    assert installed(through) == installed(reference)


async def test_live_cooldown_leaves_off_exactly_the_young_files(make_proxy):
    age = 90 * 86400.0
    proxy = await make_proxy(upstream=default_upstream(), min_release_age=age)
    theirs = await page_files(default_upstream() + "pip/")
    ours = await page_files(proxy.url + "pip/")
    cutoff = time.time() - age
    old_enough = {
        f["filename"] for f in theirs if (parse_upload_time(f.get("upload-time")) or 1e20) <= cutoff
    }
    assert {f["filename"] for f in ours} == old_enough
    assert old_enough  # the rule hides only what is younger than the cooldown

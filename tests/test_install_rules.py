"""The install rules through a real proxy in front of the local upstream, with a fake clock:
every rule on every representation (JSON, HTML, file, .metadata, .provenance), named indexes,
takedowns and outages."""

import json

import aiohttp
import pytest

from cacheproxy.config import NamedIndex, parse_timestamp
from cacheproxy.http.keys import STORE
from cacheproxy.pages.rules import parse_upload_time
from cacheproxy.protocol.negotiation import JSON_V1
from tests.fakes.clock import FakeClock
from tests.test_warm import cli, uv_lock_for

OLD = "tinyalpha-1.0-py3-none-any.whl"
NEW = "tinyalpha-2.0-py3-none-any.whl"
HELPER = "beta_helper-1.0-py3-none-any.whl"
DAY = 86400.0


async def get(url, accept=JSON_V1):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Accept": accept}) as resp:
            return resp.status, resp.headers, await resp.read()


async def files_on_page(proxy, project="tinyalpha", accept=JSON_V1):
    status, headers, body = await get(proxy.url + f"{project}/", accept)
    assert status == 200, body
    if accept == JSON_V1:
        page = json.loads(body)
        return {f["filename"] for f in page["files"]}, page.get("versions"), headers
    text = body.decode()
    return {name for name in (OLD, NEW) if f">{name}<" in text}, None, headers


@pytest.fixture
def dated(upstream):
    """tinyalpha 1.0 is a year old, 2.0 an hour old, on the fake clock."""
    clock = FakeClock(parse_timestamp("2025-06-01T12:00:00Z"))
    upstream.index.files[OLD].upload_time = "2024-06-01T12:00:00.000000Z"
    upstream.index.files[NEW].upload_time = "2025-06-01T11:00:00.000000Z"
    upstream.index.files[NEW].provenance = b'{"attestation_bundles": []}'
    return clock


@pytest.mark.parametrize("accept", [JSON_V1, "text/html"])
async def test_cooldown_hides_young_files_until_they_come_of_age(make_proxy, dated, accept):
    proxy = await make_proxy(clock=dated, min_release_age=DAY, page_ttl=7 * DAY)
    files, versions, headers = await files_on_page(proxy, accept=accept)
    assert files == {OLD}
    if accept == JSON_V1:
        assert versions == ["1.0"]  # PEP 700: a version with no visible file is left out
    # max-age ends when the held-back file becomes visible, not at the end of the TTL.
    assert headers["Cache-Control"].startswith(f"max-age={int(23 * 3600)},")
    await files_on_page(proxy, accept=accept)  # now a hot, pre-rendered copy
    dated.now += 23 * 3600 + 1  # still inside the page TTL, past the cooldown
    files, versions, _ = await files_on_page(proxy, accept=accept)
    assert files == {OLD, NEW}


@pytest.mark.parametrize("suffix", ["", ".metadata", ".provenance"])
async def test_hidden_files_are_refused_with_the_reason(make_proxy, dated, upstream, suffix):
    proxy = await make_proxy(clock=dated, min_release_age=DAY)
    status, headers, body = await get(proxy.url + f"tinyalpha/{NEW}{suffix}")
    assert status == 403
    reason = body.decode()
    assert "min-release-age" in reason and "2025-06-02T11:00:00Z" in reason
    assert reason.count("\n") == 1
    assert upstream.index.file_hits(NEW + suffix) == 0
    status, _, _ = await get(proxy.url + f"tinyalpha/{OLD}")
    assert status == 200
    dated.now += DAY  # the refusal was kept in memory; the clock ends it
    status, _, _ = await get(proxy.url + f"tinyalpha/{NEW}{suffix}")
    assert status == 200


async def test_a_cached_file_inside_a_later_cooldown_is_refused(make_proxy, dated):
    open_proxy = await make_proxy(clock=dated)
    assert (await get(open_proxy.url + f"tinyalpha/{NEW}"))[0] == 200
    strict = await make_proxy(clock=dated, min_release_age=DAY)
    status, _, body = await get(strict.url + f"tinyalpha/{NEW}")
    assert status == 403 and b"min-release-age" in body


async def test_exempt_projects_skip_the_cooldown(make_proxy, dated):
    proxy = await make_proxy(clock=dated, min_release_age=DAY, release_age_exempt=("tinyalpha",))
    assert (await files_on_page(proxy))[0] == {OLD, NEW}
    assert (await get(proxy.url + f"tinyalpha/{NEW}"))[0] == 200


@pytest.mark.parametrize("accept", [JSON_V1, "text/html"])
async def test_snapshot_is_the_index_as_it_was(make_proxy, dated, accept):
    proxy = await make_proxy(clock=dated, exclude_newer=parse_timestamp("2025-01-01"))
    assert (await files_on_page(proxy, accept=accept))[0] == {OLD}
    status, _, body = await get(proxy.url + f"tinyalpha/{NEW}.metadata")
    assert status == 403 and b"snapshot of 2025-01-02T00:00:00Z" in body
    dated.now += 365 * DAY  # time does not bring a snapshot's later files back
    assert (await files_on_page(proxy, accept=accept))[0] == {OLD}


async def test_unknown_upload_time_is_hidden_by_default(make_proxy, dated, upstream):
    upstream.index.mode = "html"  # an HTML index states no upload times
    proxy = await make_proxy(clock=dated, exclude_newer=parse_timestamp("2025-01-01"))
    status, _, body = await get(proxy.url + "tinyalpha/")
    assert status == 200 and json.loads(body)["files"] == []
    status, _, body = await get(proxy.url + f"tinyalpha/{OLD}")
    assert status == 403 and b"upload time is unknown" in body


async def test_unknown_upload_time_shown_then_dated_once_cached(make_proxy, dated, upstream):
    upstream.index.mode = "html"
    proxy = await make_proxy(
        clock=dated, exclude_newer=parse_timestamp("2025-01-01"), unknown_upload_time="show"
    )
    assert (await files_on_page(proxy))[0] == {OLD, NEW}
    # Once cached, the file's Last-Modified is its upload time and the snapshot applies.
    assert (await get(proxy.url + f"tinyalpha/{NEW}"))[0] == 200
    assert (await files_on_page(proxy))[0] == {OLD}


async def test_denied_project_page_is_403_with_the_rule(make_proxy, dated):
    proxy = await make_proxy(clock=dated, deny=("tinyalpha",))
    for accept in (JSON_V1, "text/html"):
        status, headers, body = await get(proxy.url + "tinyalpha/", accept)
        assert status == 403
        assert body.decode() == "tinyalpha is denied by this proxy's rule deny tinyalpha\n"
    assert (await get(proxy.url + f"tinyalpha/{OLD}"))[0] == 403
    assert (await get(proxy.url + "beta-helper/"))[0] == 200


async def test_denied_versions_vanish_like_cooled_down_ones(make_proxy, dated):
    proxy = await make_proxy(clock=dated, deny=("tinyalpha>=2",))
    files, versions, _ = await files_on_page(proxy)
    assert files == {OLD} and versions == ["1.0"]
    status, _, body = await get(proxy.url + f"tinyalpha/{NEW}")
    assert status == 403 and b"deny tinyalpha>=2" in body


async def test_allow_list_serves_only_what_it_names(make_proxy, dated):
    proxy = await make_proxy(clock=dated, allow=("tinyalpha==1.0", "beta-helper"))
    assert (await files_on_page(proxy))[0] == {OLD}
    assert (await get(proxy.url + "beta-helper/"))[0] == 200
    status, _, body = await get(proxy.url + "bigpkg/")
    assert status == 403 and b"not on this proxy's allow list" in body


async def test_named_index_has_its_own_rules(make_proxy, dated, upstream):
    inner = NamedIndex(name="inner", upstream=upstream.simple_url, deny=("tinyalpha",))
    proxy = await make_proxy(clock=dated, min_release_age=DAY, indexes=(inner,))
    assert (await files_on_page(proxy))[0] == {OLD}
    base = proxy.url.removesuffix("simple/") + "index/inner/simple/"
    assert (await get(base + "tinyalpha/"))[0] == 403
    status, _, body = await get(base + "beta-helper/")
    assert status == 200  # the main index's cooldown is inherited; the helper is old
    assert [f["filename"] for f in json.loads(body)["files"]] == [HELPER]


async def test_status_page_and_metrics_show_the_rules(make_proxy, dated):
    proxy = await make_proxy(clock=dated, min_release_age=7 * DAY, deny=("evilpkg",))
    await files_on_page(proxy)
    await get(proxy.url + f"tinyalpha/{NEW}")
    root = proxy.url.removesuffix("simple/")
    status, _, body = await get(root, "text/html")
    text = body.decode()
    assert "files younger than 7d are hidden" in text and "deny: evilpkg" in text
    _, _, metrics = await get(root + "metrics", "text/plain")
    lines = metrics.decode().splitlines()
    assert 'cacheproxy_policy_hidden_total{kind="page",rule="min-release-age"} 1.0' in lines
    assert 'cacheproxy_policy_hidden_total{kind="file",rule="min-release-age"} 1.0' in lines


async def test_takedown_removes_a_cached_file_once_the_page_is_revalidated(make_proxy, upstream):
    clock = FakeClock()
    proxy = await make_proxy(clock=clock, page_ttl=60)
    assert (await get(proxy.url + f"tinyalpha/{NEW}"))[0] == 200
    assert (await get(proxy.url + f"tinyalpha/{NEW}.metadata"))[0] == 200
    store = proxy.server.app[STORE]
    assert await store.find_file("tinyalpha", NEW) is not None
    del upstream.index.files[NEW]
    upstream.index.files[OLD].yanked = "broken"  # yanked files stay installable (PEP 592)
    # Until the page is revalidated the proxy has no word of the takedown.
    assert (await get(proxy.url + f"tinyalpha/{NEW}"))[0] == 200
    clock.now += 61
    assert (await files_on_page(proxy))[0] == {OLD}
    for suffix in ("", ".metadata"):
        status, _, body = await get(proxy.url + f"tinyalpha/{NEW}{suffix}")
        assert status == 410 and b"was removed upstream" in body
    assert await store.find_file("tinyalpha", NEW) is None
    assert await store.find_file("tinyalpha", NEW + ".metadata") is None
    assert (await get(proxy.url + f"tinyalpha/{OLD}"))[0] == 200


async def test_outage_keeps_the_last_listing(make_proxy, upstream):
    clock = FakeClock()
    proxy = await make_proxy(clock=clock, page_ttl=60)
    assert (await get(proxy.url + f"tinyalpha/{NEW}"))[0] == 200
    upstream.index.page_status = 503
    clock.now += 61
    files, _, headers = await files_on_page(proxy)
    assert files == {OLD, NEW} and "stale" in headers["Warning"]
    assert (await get(proxy.url + f"tinyalpha/{NEW}"))[0] == 200


def test_upload_times_parse_as_the_index_writes_them():
    assert parse_upload_time("2024-06-01T12:00:00.000000Z") == parse_timestamp(
        "2024-06-01T12:00:00Z"
    )
    assert parse_upload_time(None) is None and parse_upload_time("yesterday") is None


async def test_warm_reports_what_the_rules_hold_back(make_proxy, dated, upstream, tmp_path):
    proxy = await make_proxy(clock=dated, min_release_age=300 * DAY)
    lock = tmp_path / "uv.lock"
    lock.write_text(uv_lock_for(upstream))
    result = await cli(str(lock), "--index-url", proxy.url)
    assert result.returncode == 1
    assert result.stdout.startswith("2 files fetched")  # the helper and its metadata
    held = [line for line in result.stderr.splitlines() if line.startswith("held back")]
    assert held == [
        f"held back by the proxy: {NEW}: {NEW} was uploaded at 2025-06-01T11:00:00Z; this "
        "proxy's min-release-age of 300d holds it back until 2026-03-28T11:00:00Z"
    ]

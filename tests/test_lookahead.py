"""Resolution lookahead against an upstream that serves no metadata: a page served to a client
leads the proxy to read the likely wheel's metadata from its tail and to fetch its
dependencies' pages, with no further client request, within its bounds and the rules."""

from __future__ import annotations

import asyncio
import io
import sys
import zipfile

import aiohttp
import pytest

from cacheproxy.http.keys import FILES, LOOKAHEAD, METRICS, PAGES
from cacheproxy.protocol.negotiation import JSON_V1
from tests.fakes.upstream import UpstreamFile
from tests.fakes.wheels import metadata_text
from tests.test_client_matrix import expected_pins, pip_install, uv_pip_compile

LINUX_PIP = (
    'pip/25.0 {"cpu":"x86_64","distro":{"libc":{"lib":"glibc","version":"2.36"},'
    '"name":"Debian"},"implementation":{"name":"CPython","version":"3.11.2"},'
    '"installer":{"name":"pip","version":"25.0"},"python":"3.11.2",'
    '"system":{"name":"Linux","release":"6.1.0"}}'
)
WINDOWS_UV = (
    'uv/0.5.0 {"installer":{"name":"uv","version":"0.5.0"},"python":"3.12.1",'
    '"implementation":{"name":"CPython","version":"3.12.1"},"distro":null,'
    '"system":{"name":"Windows","release":"10"},"cpu":"AMD64"}'
)
LINUX_WHEEL = "platpkg-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WINDOWS_WHEEL = "platpkg-1.0-cp312-cp312-win_amd64.whl"
PURE_WHEEL = "platpkg-1.0-py3-none-any.whl"
ROOT_NEW = "rootpkg-2.0-py3-none-any.whl"
ROOT_OLD = "rootpkg-1.0-py3-none-any.whl"


def wheel(name: str, version: str, requires: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}/__init__.py", b"")
        archive.writestr(
            f"{name}-{version}.dist-info/METADATA", metadata_text(name, version, requires)
        )
        archive.writestr(f"{name}-{version}.dist-info/WHEEL", b"Wheel-Version: 1.0\n")
    return buffer.getvalue()


def add(upstream, filename: str, requires: list[str]) -> None:
    name, version = filename.split("-")[:2]
    data = wheel(name, version, requires)
    upstream.index.files[filename] = UpstreamFile(name, filename, data)


@pytest.fixture
def chain(upstream):
    """rootpkg 2.0 -> mid -> leaf -> deeper (rootpkg 1.0 needs other), and platpkg with a
    wheel per platform, each needing its own dependency; no metadata anywhere, no sizes
    or hashes for rootpkg (a bare index)."""
    for entry in upstream.index.files.values():
        entry.metadata = None
    add(upstream, ROOT_OLD, ["other"])
    add(
        upstream,
        ROOT_NEW,
        ["mid>=1", "tinyalpha; extra == 'docs'", "winonly; sys_platform == 'win32'"],
    )
    add(upstream, "mid-1.0-py3-none-any.whl", ["leaf"])
    add(upstream, "mid-3.0b1-py3-none-any.whl", ["unwanted"])
    for project in ("leaf", "deeper", "other", "unwanted", "winonly"):
        add(upstream, f"{project}-1.0-py3-none-any.whl", ["deeper"] if project == "leaf" else [])
    add(upstream, LINUX_WHEEL, ["linuxdep"])
    add(upstream, WINDOWS_WHEEL, ["windep"])
    add(upstream, PURE_WHEEL, ["puredep"])
    for project in ("linuxdep", "windep", "puredep"):
        add(upstream, f"{project}-1.0-py3-none-any.whl", [])
    upstream.index.hashless.update({ROOT_OLD, ROOT_NEW})
    return upstream


async def get(url: str, user_agent: str) -> tuple[int, bytes]:
    headers = {"User-Agent": user_agent, "Accept": JSON_V1}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as resp:
            return resp.status, await resp.read()


async def settle(proxy) -> None:
    await proxy.server.app[LOOKAHEAD].settled()
    await proxy.server.app[FILES].tail_metadata.flush()


def fetched(proxy, kind: str) -> float:
    metrics = proxy.server.app[METRICS]
    return metrics.total(metrics.lookahead_fetches, kind=kind)


async def test_a_cold_page_leads_to_the_likely_wheel_and_its_dependencies(proxy, chain):
    status, _ = await get(proxy.url + "rootpkg/", LINUX_PIP)
    assert status == 200
    await settle(proxy)
    index = chain.index
    # The newest release's wheel, read from its tail; the older one untouched.
    assert index.file_hits(ROOT_NEW) >= 1 and index.file_hits(ROOT_OLD) == 0
    # Its dependency's page and its newest final release (not the pre-release); the extra and
    # the Windows-only requirement are not followed.
    assert index.page_hits("mid") == 1 and index.file_hits("mid-1.0-py3-none-any.whl") >= 1
    assert index.page_hits("unwanted") == index.page_hits("tinyalpha") == 0
    assert index.page_hits("winonly") == index.page_hits("other") == 0
    # Two levels below the page: leaf is fetched and read, deeper is not.
    assert index.page_hits("leaf") == 1 and index.file_hits("leaf-1.0-py3-none-any.whl") >= 1
    assert index.page_hits("deeper") == 0
    assert fetched(proxy, "page") == 2 and fetched(proxy, "metadata") == 3
    # Nothing was downloaded whole: the upstream sent only ranges and HEADs.
    assert all(index.requests[("GET", f.url_path)] <= 2 for f in index.files.values())


async def test_a_page_served_is_looked_ahead_from_while_deeper_visits_wait(proxy, chain):
    lookahead = proxy.server.app[LOOKAHEAD]
    lookahead.concurrency = 0  # every deeper visit waits, as behind slow ones
    await get(proxy.url + "rootpkg/", LINUX_PIP)
    for _ in range(500):
        if chain.index.file_hits(ROOT_NEW):
            break
        await asyncio.sleep(0.01)
    # The client's own page is read from at once (the client reads the same wheel next)...
    assert chain.index.file_hits(ROOT_NEW) >= 1
    # ...while the guesses below it wait for a slot.
    assert chain.index.page_hits("mid") == 0
    await lookahead.close()


async def test_pages_looked_at_are_not_kept_expanded(proxy, chain):
    await get(proxy.url + "rootpkg/", LINUX_PIP)
    await settle(proxy)
    assert fetched(proxy, "page") == 2
    # Only the compact stored pages and the rendered ones stay in memory, within the budget.
    assert len(proxy.server.app[PAGES].visibility) == 0


async def test_each_page_the_client_asks_for_looks_further_ahead(proxy, chain):
    await get(proxy.url + "rootpkg/", LINUX_PIP)
    await settle(proxy)
    # leaf was visited at the depth limit; the client's own request goes on from it.
    await get(proxy.url + "leaf/", LINUX_PIP)
    await settle(proxy)
    assert chain.index.page_hits("leaf") == 1 and chain.index.page_hits("deeper") == 1


async def test_the_clients_own_metadata_request_is_served_from_the_store(proxy, chain):
    await get(proxy.url + "rootpkg/", LINUX_PIP)
    await settle(proxy)
    before = chain.index.file_hits(ROOT_NEW)
    status, body = await get(proxy.url + f"rootpkg/{ROOT_NEW}.metadata", LINUX_PIP)
    assert status == 200 and body == metadata_text("rootpkg", "2.0", ["mid>=1",
        "tinyalpha; extra == 'docs'", "winonly; sys_platform == 'win32'"])  # fmt: skip
    assert chain.index.file_hits(ROOT_NEW) == before
    # And the dependency's page is a hit: the upstream was asked for it once, by the lookahead.
    assert (await get(proxy.url + "mid/", LINUX_PIP))[0] == 200
    assert chain.index.page_hits("mid") == 1


@pytest.mark.parametrize(
    ("user_agent", "picked", "dependency"),
    [
        (LINUX_PIP, LINUX_WHEEL, "linuxdep"),
        (WINDOWS_UV, WINDOWS_WHEEL, "windep"),
        ("curl/8.0", PURE_WHEEL, "puredep"),
    ],
    ids=["manylinux", "win_amd64", "unknown"],
)
async def test_the_wheel_for_the_clients_platform(proxy, chain, user_agent, picked, dependency):
    await get(proxy.url + "platpkg/", user_agent)
    await settle(proxy)
    wheels = (LINUX_WHEEL, WINDOWS_WHEEL, PURE_WHEEL)
    assert [w for w in wheels if chain.index.file_hits(w)] == [picked]
    pages = [p for p in ("linuxdep", "windep", "puredep") if chain.index.page_hits(p)]
    assert pages == [dependency]


LINUX_UV = LINUX_PIP.replace("pip/25.0", "uv/0.9.0")


def macos_and_linux(upstream, project: str) -> tuple[str, str]:
    """A release with a macOS wheel (first by name) and a manylinux one, no metadata."""
    mac = f"{project}-1.0-cp311-cp311-macosx_10_9_x86_64.whl"
    linux = f"{project}-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    add(upstream, mac, [])
    add(upstream, linux, [])
    return mac, linux


async def test_a_client_that_picks_first_wheels_is_looked_ahead_for_as_it_picks(proxy, chain):
    """uv lock asks for each release's first wheel by name, a macOS one, from a Linux host:
    once it has been seen doing so, the proxy reads the wheels it will ask for."""
    asked_mac, asked_linux = macos_and_linux(chain, "lockpkg")
    next_mac, next_linux = macos_and_linux(chain, "lockdep")
    await get(proxy.url + "lockpkg/", LINUX_UV)
    await settle(proxy)
    assert chain.index.file_hits(asked_linux) >= 1  # the platform's wheel, guessed first
    status, _ = await get(proxy.url + f"lockpkg/{asked_mac}.metadata", LINUX_UV)
    assert status == 200
    await settle(proxy)
    await get(proxy.url + "lockdep/", LINUX_UV)
    await settle(proxy)
    assert chain.index.file_hits(next_mac) >= 1 and chain.index.file_hits(next_linux) == 0
    # Another client, and one that asks for its platform's wheel, are looked ahead as before.
    await get(proxy.url + f"lockpkg/{asked_linux}.metadata", LINUX_PIP)
    third_mac, third_linux = macos_and_linux(chain, "lockthird")
    await get(proxy.url + "lockthird/", LINUX_PIP)
    await settle(proxy)
    assert chain.index.file_hits(third_linux) >= 1 and chain.index.file_hits(third_mac) == 0


async def test_a_denied_version_is_not_looked_ahead(make_proxy, chain):
    proxy = await make_proxy(deny=("rootpkg==2.0", "leaf"))
    await get(proxy.url + "rootpkg/", LINUX_PIP)
    await settle(proxy)
    # The release a client may have is the older one, and its dependency is followed.
    assert chain.index.file_hits(ROOT_NEW) == 0 and chain.index.file_hits(ROOT_OLD) >= 1
    assert chain.index.page_hits("other") == 1 and chain.index.page_hits("mid") == 0
    # A denied project is neither fetched nor read ahead.
    await get(proxy.url + "mid/", LINUX_PIP)
    await settle(proxy)
    assert chain.index.page_hits("leaf") == 0


async def test_turned_off_by_the_setting(make_proxy, chain):
    proxy = await make_proxy(lookahead=False)
    await get(proxy.url + "rootpkg/", LINUX_PIP)
    await settle(proxy)
    assert chain.index.file_hits(ROOT_NEW) == 0 and chain.index.page_hits("mid") == 0


async def test_nothing_is_read_ahead_when_the_upstream_serves_metadata(proxy, upstream):
    status, _ = await get(proxy.url + "tinyalpha/", LINUX_PIP)
    assert status == 200
    await settle(proxy)
    assert upstream.index.file_hits("tinyalpha-2.0-py3-none-any.whl") == 0
    assert upstream.index.page_hits("beta-helper") == 0


async def test_uv_and_pip_resolve_through_a_proxy_that_looks_ahead(proxy, upstream, tmp_path):
    for entry in upstream.index.files.values():
        entry.metadata = None
    assert await uv_pip_compile(proxy.url, tmp_path) == expected_pins(upstream)
    await settle(proxy)
    # uv's own User-Agent named its platform: the dependency's page was fetched ahead of it.
    assert fetched(proxy, "page") == 1 and upstream.index.page_hits("beta-helper") == 1
    await pip_install([sys.executable, "-m", "pip"], proxy.url, tmp_path / "pip")

"""Named indexes: each upstream served apart under /index/<name>/simple/, with its own TTL,
credentials and cache, and never merged with the main index."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys

import pytest
from aiohttp import ClientSession

from cacheproxy.config import NamedIndex, load_config
from cacheproxy.errors import ConfigError
from tests.fakes.clients import uv_pip_install
from tests.fakes.clock import FakeClock
from tests.fakes.upstream import UpstreamIndex, make_app
from tests.fakes.wheels import build_wheel

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@dataclasses.dataclass
class SecondUpstream:
    index: UpstreamIndex
    url: str


@pytest.fixture
async def local_wheels(aiohttp_server, tmp_path) -> SecondUpstream:
    """A second upstream, like a vendor's wheel index: its own build of tinyalpha, 9.0."""
    index = UpstreamIndex()
    index.add_wheel(build_wheel(tmp_path / "vendor", "tinyalpha", "9.0"))
    server = await aiohttp_server(make_app(index))
    return SecondUpstream(index, str(server.make_url("/simple/")))


def named(name: str, url: str, **settings) -> tuple[NamedIndex, ...]:
    return (NamedIndex(name=name, upstream=url, **settings),)


async def versions(session: ClientSession, url: str) -> list[str]:
    async with session.get(url, headers=JSON) as resp:
        assert resp.status == 200, await resp.text()
        return sorted(f["filename"] for f in (await resp.json())["files"])


async def test_each_index_lists_only_its_own_files(make_proxy, local_wheels, tmp_path):
    proxy = await make_proxy(indexes=named("vendor", local_wheels.url))
    base = proxy.url.removesuffix("simple/")
    async with ClientSession() as session:
        main = await versions(session, proxy.url + "tinyalpha/")
        vendor = await versions(session, base + "index/vendor/simple/tinyalpha/")
        assert main == ["tinyalpha-1.0-py3-none-any.whl", "tinyalpha-2.0-py3-none-any.whl"]
        assert vendor == ["tinyalpha-9.0-py3-none-any.whl"]
        # A file of one index is not served through the other.
        async with session.get(proxy.url + "tinyalpha/tinyalpha-9.0-py3-none-any.whl") as resp:
            assert resp.status == 404
        async with session.get(base + "index/") as resp:
            assert (await resp.text()).split() == ["/simple/", "/index/vendor/simple/"]
        async with session.get(base + "index/nobody/simple/tinyalpha/") as resp:
            assert resp.status == 404
    # Each index keeps its own cache.
    assert (tmp_path / "cache" / "indexes" / "vendor" / "store").is_dir()


async def test_uv_installs_from_a_named_index_and_again_with_it_down(
    make_proxy, local_wheels, upstream, tmp_path
):
    proxy = await make_proxy(indexes=named("vendor", local_wheels.url))
    vendor_url = proxy.url.removesuffix("simple/") + "index/vendor/simple/"
    (await uv_pip_install(vendor_url, tmp_path / "a", "tinyalpha")).assert_ok()
    assert (tmp_path / "a" / "tinyalpha-9.0.dist-info").is_dir()
    assert local_wheels.index.file_hits("tinyalpha-9.0-py3-none-any.whl") == 1
    assert upstream.index.page_hits("tinyalpha") == 0  # the main upstream was never asked

    local_wheels.index.page_status = 503
    (await uv_pip_install(vendor_url, tmp_path / "b", "tinyalpha")).assert_ok()
    assert (tmp_path / "b" / "tinyalpha-9.0.dist-info").is_dir()
    assert local_wheels.index.file_hits("tinyalpha-9.0-py3-none-any.whl") == 1


async def test_redirects_stay_under_the_index_prefix(make_proxy, local_wheels):
    proxy = await make_proxy(indexes=named("vendor", local_wheels.url))
    base = proxy.url.removesuffix("simple/") + "index/vendor/simple"
    async with ClientSession() as session:
        for path, location in [
            ("/TinyAlpha/", "/index/vendor/simple/tinyalpha/"),
            ("/tinyalpha", "/index/vendor/simple/tinyalpha/"),
            ("", "/index/vendor/simple/"),
        ]:
            async with session.get(base + path, allow_redirects=False) as resp:
                assert resp.status == 301, path
                assert resp.headers["Location"] == location


async def test_each_index_has_its_own_page_ttl(make_proxy, local_wheels, upstream):
    clock = FakeClock()
    indexes = named("vendor", local_wheels.url, page_ttl=30)
    proxy = await make_proxy(clock=clock, page_ttl=3600, indexes=indexes)
    vendor_url = proxy.url.removesuffix("simple/") + "index/vendor/simple/"
    async with ClientSession() as session:
        await versions(session, proxy.url + "tinyalpha/")
        await versions(session, vendor_url + "tinyalpha/")
        clock.now += 60
        await versions(session, proxy.url + "tinyalpha/")
        await versions(session, vendor_url + "tinyalpha/")
    assert upstream.index.page_hits("tinyalpha") == 1  # still fresh after 60 s of 3600
    assert local_wheels.index.page_hits("tinyalpha") == 2  # stale after 30 s: asked again


async def test_credentials_go_only_to_their_own_index(make_proxy, local_wheels, upstream):
    local_wheels.index.required_auth = ("ci", "vendor-secret")
    url = local_wheels.url.replace("http://", "http://ci:vendor-secret@")
    proxy = await make_proxy(indexes=named("vendor", url))
    base = proxy.url.removesuffix("simple/")
    async with ClientSession() as session:
        assert await versions(session, base + "index/vendor/simple/tinyalpha/") == [
            "tinyalpha-9.0-py3-none-any.whl"
        ]
        await versions(session, proxy.url + "tinyalpha/")
        async with session.get(base) as resp:
            status_page = await resp.text()
        async with session.get(base + "metrics") as resp:
            metrics = await resp.text()
    assert "vendor-secret" not in status_page + metrics
    assert upstream.index.page_hits("tinyalpha") == 1  # the main upstream needs no password


async def test_named_index_requests_show_in_metrics(make_proxy, local_wheels):
    proxy = await make_proxy(indexes=named("vendor", local_wheels.url))
    base = proxy.url.removesuffix("simple/")
    async with ClientSession() as session:
        page = base + "index/vendor/simple/tinyalpha/"
        await versions(session, page)
        async with session.get(page + "tinyalpha-9.0-py3-none-any.whl") as resp:
            size = len(await resp.read())
        async with session.get(page + "tinyalpha-9.0-py3-none-any.whl") as resp:
            await resp.read()
        async with session.get(base + "metrics") as resp:
            metrics = await resp.text()
    assert 'cacheproxy_cache_outcomes_total{kind="file",outcome="hit"} 1.0' in metrics
    assert f'cacheproxy_file_bytes_served_total{{source="cache"}} {float(size)}' in metrics
    assert 'route="/index/vendor/simple/{project}/{filename}"' in metrics


def test_indexes_from_a_config_file_with_password_from_environment(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text(
        "[indexes]\n"
        'plain = "http://a.invalid/simple/"\n'
        "[indexes.cpu-wheels]\n"
        'url = "http://b.invalid/whl/cpu/"\n'
        'page-ttl = "1h"\n'
        'max_size = "5GiB"\n'
        'username = "ci"\n'
        'password_env = "CPU_WHEELS_TOKEN"\n'
    )
    config = load_config({}, {"CPU_WHEELS_TOKEN": "t0ken-value"}, file)
    cpu = config.for_index(config.index_named("cpu-wheels"))
    assert cpu.upstream_credentials == ("ci", "t0ken-value")
    assert cpu.public_upstream == "http://b.invalid/whl/cpu/"
    assert (cpu.page_ttl, cpu.max_size) == (3600, 5 * 1024**3)
    assert cpu.cache_dir == config.cache_dir / "indexes" / "cpu-wheels"
    plain = config.for_index(config.index_named("plain"))
    assert (plain.page_ttl, plain.negative_ttl) == (config.page_ttl, config.negative_ttl)
    assert "t0ken-value" not in repr(config.indexes)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Vendor=http://a.invalid/", "'Vendor' is not an index name"),
        ("vendor", "'vendor' is not NAME=URL"),
        ("vendor=ftp://a.invalid/", "index 'vendor' url: must be an http"),
        ("a=http://x.invalid/,a=http://y.invalid/", "an index name is given twice"),
    ],
)
def test_bad_index_settings_are_one_line_errors(value, message):
    with pytest.raises(ConfigError) as caught:
        load_config({}, {"CACHEPROXY_INDEXES": value})
    assert message in str(caught.value) and "CACHEPROXY_INDEXES" in str(caught.value)


def test_missing_password_variable_is_named(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('[indexes.v]\nurl = "http://a.invalid/"\npassword_env = "V_TOKEN"\n')
    with pytest.raises(ConfigError, match="environment variable V_TOKEN is not set"):
        load_config({}, {}, file)
    file.write_text('[indexes.v]\nurl = "http://a.invalid/"\nttl = 5\n')
    with pytest.raises(ConfigError, match="index 'v': unknown key 'ttl'"):
        load_config({}, {}, file)


async def test_cache_commands_work_on_a_named_index(make_proxy, local_wheels, tmp_path):
    proxy = await make_proxy(indexes=named("vendor", local_wheels.url))
    page = proxy.url.removesuffix("simple/") + "index/vendor/simple/tinyalpha/"
    async with ClientSession() as session:
        async with session.get(page + "tinyalpha-9.0-py3-none-any.whl") as resp:
            assert resp.status == 200
    env = {**os.environ, "CACHEPROXY_CACHE_DIR": str(tmp_path / "cache")}
    env["CACHEPROXY_INDEXES"] = f"vendor={local_wheels.url}"

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "cacheproxy", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env)

    stats = await asyncio.to_thread(cli, "stats", "--index", "vendor")
    assert stats.returncode == 0, stats.stderr
    assert "files: 1 wheels and sdists" in stats.stdout and "tinyalpha" in stats.stdout
    purged = await asyncio.to_thread(cli, "purge", "tinyalpha", "--index", "vendor")
    assert "removed 3 entries of tinyalpha" in purged.stdout  # page, file, file facts
    assert (
        "files: 0 wheels and sdists"
        in (await asyncio.to_thread(cli, "stats", "--index", "vendor")).stdout
    )
    unknown = await asyncio.to_thread(cli, "stats", "--index", "nobody")
    assert unknown.returncode == 2
    assert unknown.stderr == "cacheproxy: error: no index named 'nobody' (vendor)\n"

"""Fixtures: wheels built once per session, a local upstream index, and the proxy in front."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cacheproxy.config import Config
from cacheproxy.http.app import create_app
from cacheproxy.http.keys import STORE
from tests.fakes.upstream import UpstreamIndex, make_app
from tests.fakes.wheels import build_wheel, metadata_of

BIG_PAYLOAD = 8 * 1024 * 1024


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> dict[str, Path]:
    """filename -> path of every wheel the test upstream serves."""
    root = tmp_path_factory.mktemp("wheelhouse")
    wheels = [
        build_wheel(root, "tinyalpha", "1.0"),
        build_wheel(
            root, "tinyalpha", "2.0", requires=["Beta_Helper>=1.0"], requires_python=">=3.8"
        ),
        build_wheel(root, "Beta_Helper", "1.0"),
        build_wheel(root, "bigpkg", "1.0", payload_size=BIG_PAYLOAD),
        build_wheel(root, "hugepkg", "1.0", payload_size=BIG_PAYLOAD),
    ]
    return {path.name: path for path in wheels}


@pytest.fixture
def wheel_bytes(wheelhouse):
    return lambda filename: wheelhouse[filename].read_bytes()


@pytest.fixture
def wheel_metadata(wheelhouse):
    return lambda filename: metadata_of(wheelhouse[filename])


@dataclasses.dataclass
class RunningUpstream:
    index: UpstreamIndex
    server: object
    simple_url: str

    async def stop(self) -> None:
        await self.server.close()


@pytest.fixture
async def upstream(aiohttp_server, wheelhouse) -> RunningUpstream:
    index = UpstreamIndex()
    for path in wheelhouse.values():
        index.add_wheel(path, requires_python=">=3.8" if "2.0" in path.name else None)
    server = await aiohttp_server(make_app(index))
    return RunningUpstream(index, server, str(server.make_url("/simple/")))


@dataclasses.dataclass
class RunningProxy:
    config: Config
    server: object
    url: str

    async def close(self) -> None:
        await self.server.close()


@pytest.fixture
async def make_proxy(aiohttp_server, tmp_path, upstream):
    """Start a proxy in front of the test upstream; every proxy of a test shares one cache."""

    async def start(clock=None, disk_reserve=None, **settings) -> RunningProxy:
        settings.setdefault("cache_dir", tmp_path / "cache")
        settings.setdefault("upstream", upstream.simple_url)
        config = Config(**settings)
        extra = {} if disk_reserve is None else {"disk_reserve": disk_reserve}
        app = create_app(config, clock, **extra) if clock else create_app(config, **extra)
        server = await aiohttp_server(app)
        return RunningProxy(config, server, str(server.make_url("/simple/")))

    return start


@pytest.fixture
async def proxy(make_proxy) -> RunningProxy:
    return await make_proxy()


@pytest.fixture
def count_page_reads(monkeypatch):
    """Starts recording which projects' pages a proxy reads from its store; the list fills
    as it runs."""

    def start(proxy: RunningProxy) -> list[str]:
        store = proxy.server.app[STORE]
        reads: list[str] = []
        for method in ("get_page", "page_with_version"):  # alone, or with its version
            original = getattr(store, method)

            async def counting(project: str, original=original):
                reads.append(project)
                return await original(project)

            monkeypatch.setattr(store, method, counting)
        return reads

    return start

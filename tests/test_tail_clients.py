"""uv, pip, poetry and pdm resolve through a proxy whose upstream gives no PEP 658 metadata:
the proxy advertises `true` for every wheel and reads the metadata from the wheel's tail, so a
resolution downloads no wheel it does not install. Clients are installed and isolated as in
test_client_matrix."""

from __future__ import annotations

import sys

import pytest

from cacheproxy.http.keys import STORE
from tests.test_client_matrix import (
    WHEELS,
    client,
    expected_pins,
    isolated_env,
    ok,
    pdm_lock_and_install,
    pip_install,
    poetry_lock_and_install,
    uv_pip_compile,
)

MODES = pytest.mark.parametrize("mode", ["json", "html"])


@pytest.fixture
def bare_upstream(upstream):
    for entry in upstream.index.files.values():
        entry.metadata = None
    return upstream


async def wheels_stored(proxy) -> list[str]:
    store = proxy.server.app[STORE]
    projects = {"tinyalpha-2.0-py3-none-any.whl": "tinyalpha"}
    return [w for w in WHEELS if await store.find_file(projects.get(w, "beta-helper"), w)]


def metadata_served_from_tails(upstream) -> None:
    """The upstream was never asked for a .metadata (it has none) and sent each wheel's bytes
    at most twice: its tail (all of so small a wheel), and the download of a client that
    fetches the wheels it picked (pip 23, even with --dry-run). Counted in bytes, not
    requests: under load a request can end before its body, and that costs the link nothing."""
    for wheel in WHEELS:
        assert upstream.index.file_hits(wheel + ".metadata") == 0, upstream.index.requests
        size = len(upstream.index.files[wheel].data)
        assert upstream.index.bytes_sent[wheel] <= 2 * size, upstream.index.bytes_sent


@MODES
async def test_uv_resolves_without_downloading(proxy, bare_upstream, tmp_path, mode):
    bare_upstream.index.mode = mode
    assert await uv_pip_compile(proxy.url, tmp_path) == expected_pins(bare_upstream)
    metadata_served_from_tails(bare_upstream)
    assert await wheels_stored(proxy) == []


@MODES
async def test_pip_dry_run_resolves_without_downloading(proxy, bare_upstream, tmp_path, mode):
    bare_upstream.index.mode = mode
    result = await ok(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
         "--no-cache-dir", "--index-url", proxy.url, "tinyalpha==2.0"],
        isolated_env(tmp_path),
    )  # fmt: skip
    assert "Would install Beta_Helper-1.0 tinyalpha-2.0" in result.stdout
    assert result.stdout.count("Obtaining dependency information") == 2  # from .metadata
    metadata_served_from_tails(bare_upstream)
    # pip releases without the fix for its issue 12603 (this 23.2 among them) still download
    # the wheels they picked after resolving from metadata;
    # it never downloads a candidate it rejected.


async def test_pip_installs(proxy, bare_upstream, tmp_path):
    await pip_install([sys.executable, "-m", "pip"], proxy.url, tmp_path)
    metadata_served_from_tails(bare_upstream)


async def test_poetry_locks_and_installs(make_proxy, bare_upstream, tmp_path):
    poetry = client("poetry", "poetry")
    proxy = await make_proxy()
    await poetry_lock_and_install(poetry, proxy.url, tmp_path)
    metadata_served_from_tails(bare_upstream)


async def test_pdm_locks_and_installs(make_proxy, bare_upstream, tmp_path):
    pdm = client("pdm", "pdm")
    proxy = await make_proxy()
    await pdm_lock_and_install(pdm, proxy.url, tmp_path)
    metadata_served_from_tails(bare_upstream)

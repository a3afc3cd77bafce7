"""Real pip and uv processes installing real wheels through the proxy."""

import pytest

from tests.fakes.clients import pip_install, uv_pip_install

INSTALLERS = {"pip": pip_install, "uv": uv_pip_install}


def installed(target):
    return sorted(p.name for p in target.iterdir() if p.name.endswith(".dist-info"))


@pytest.mark.parametrize("installer", INSTALLERS)
@pytest.mark.parametrize("mode", ["json", "html"])
async def test_install_cold_then_warm_with_upstream_gone(
    installer, mode, make_proxy, upstream, tmp_path
):
    upstream.index.mode = mode
    install = INSTALLERS[installer]
    proxy = await make_proxy()
    cold = tmp_path / "cold"
    (await install(proxy.url, cold, "tinyalpha==2.0")).assert_ok()
    assert installed(cold) == ["beta_helper-1.0.dist-info", "tinyalpha-2.0.dist-info"]
    assert upstream.index.file_hits("tinyalpha-2.0-py3-none-any.whl") == 1
    assert upstream.index.file_hits("beta_helper-1.0-py3-none-any.whl") == 1

    # A restarted proxy with no upstream at all still installs everything from its cache,
    # even once its pages are past their TTL.
    await proxy.close()
    await upstream.stop()
    offline_proxy = await make_proxy(page_ttl=0)
    warm = tmp_path / "warm"
    (await install(offline_proxy.url, warm, "tinyalpha==2.0")).assert_ok()
    assert installed(warm) == installed(cold)
    assert (warm / "tinyalpha" / "__init__.py").read_text() == '__version__ = "2.0"\n'


@pytest.mark.parametrize("installer", INSTALLERS)
async def test_install_fails_cleanly_on_corrupt_upstream_then_recovers(
    installer, proxy, upstream, tmp_path
):
    install = INSTALLERS[installer]
    upstream.index.corrupt.add("beta_helper-1.0-py3-none-any.whl")
    result = await install(proxy.url, tmp_path / "bad", "tinyalpha==2.0")
    assert result.returncode != 0
    assert not (tmp_path / "bad" / "beta_helper").exists()
    upstream.index.corrupt.clear()
    (await install(proxy.url, tmp_path / "good", "tinyalpha==2.0")).assert_ok()


async def test_pip_with_no_metadata_upstream(proxy, upstream, tmp_path):
    for entry in upstream.index.files.values():
        entry.metadata = None
    (await pip_install(proxy.url, tmp_path / "t", "tinyalpha")).assert_ok()
    (await uv_pip_install(proxy.url, tmp_path / "u", "tinyalpha")).assert_ok()
    assert installed(tmp_path / "u") == installed(tmp_path / "t")

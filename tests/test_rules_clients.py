"""Real uv and pip processes against a proxy with install rules."""

import pytest

from cacheproxy.config import parse_timestamp
from tests.fakes.clients import uv_pip_install
from tests.test_installs import INSTALLERS, installed

SNAPSHOT = "2025-01-01T00:00:00Z"


@pytest.fixture
def dated(upstream):
    upstream.index.files[
        "tinyalpha-1.0-py3-none-any.whl"
    ].upload_time = "2024-06-01T12:00:00.000000Z"
    upstream.index.files[
        "tinyalpha-2.0-py3-none-any.whl"
    ].upload_time = "2025-06-01T11:00:00.000000Z"


@pytest.mark.parametrize("installer", INSTALLERS)
async def test_snapshot_on_the_proxy_matches_uv_exclude_newer(
    installer, dated, make_proxy, upstream, tmp_path
):
    # The reference: uv's own --exclude-newer straight against the upstream (this pip has no
    # --uploaded-prior-to, so uv's client-side answer stands for both).
    reference = tmp_path / "reference"
    result = await uv_pip_install(
        upstream.simple_url, reference, "tinyalpha", extra_args=("--exclude-newer", SNAPSHOT)
    )
    result.assert_ok()
    proxy = await make_proxy(exclude_newer=parse_timestamp(SNAPSHOT))
    target = tmp_path / installer
    (await INSTALLERS[installer](proxy.url, target, "tinyalpha")).assert_ok()
    assert installed(target) == installed(reference) == ["tinyalpha-1.0.dist-info"]


@pytest.mark.parametrize("installer", INSTALLERS)
async def test_denied_versions_make_clients_pick_the_newest_allowed(
    installer, make_proxy, tmp_path
):
    proxy = await make_proxy(deny=("tinyalpha>=2",))
    target = tmp_path / installer
    (await INSTALLERS[installer](proxy.url, target, "tinyalpha")).assert_ok()
    assert installed(target) == ["tinyalpha-1.0.dist-info"]


@pytest.mark.parametrize("installer", INSTALLERS)
async def test_denied_project_fails_and_a_locked_file_shows_the_reason(
    installer, make_proxy, tmp_path
):
    """A name to resolve meets the page's 403 (uv says so, pip only that nothing was found:
    neither prints a page's reason); a locked file URL meets the file's 403, whose reason
    both print from the status line."""
    proxy = await make_proxy(deny=("tinyalpha",))
    result = await INSTALLERS[installer](proxy.url, tmp_path / "name", "tinyalpha")
    assert result.returncode != 0
    assert "403" in result.stderr if installer == "uv" else "tinyalpha" in result.stderr
    locked = proxy.url + "tinyalpha/tinyalpha-2.0-py3-none-any.whl"
    result = await INSTALLERS[installer](proxy.url, tmp_path / "locked", locked)
    assert result.returncode != 0
    # uv wraps its messages to the terminal's width: compare with the line breaks undone.
    assert "tinyalpha is denied by this proxy's rule deny tinyalpha" in one_line(result.stderr)


@pytest.mark.parametrize("installer", INSTALLERS)
async def test_locked_release_inside_its_cooldown_fails_with_the_reason(
    installer, dated, make_proxy, tmp_path
):
    """A lock pins a file by URL: one still inside its cooldown fails, and says until when."""
    proxy = await make_proxy(min_release_age=3650 * 86400.0)
    locked = proxy.url + "tinyalpha/tinyalpha-2.0-py3-none-any.whl"
    result = await INSTALLERS[installer](proxy.url, tmp_path / installer, locked)
    assert result.returncode != 0
    reason = "min-release-age of 3650d holds it back until 2035-05-30T11:00:00Z"
    assert reason in one_line(result.stderr)


def one_line(text: str) -> str:
    return " ".join(text.split())

"""--memory-budget: where it is set, and what the page caches hold shown as metrics and on the
status page."""

from __future__ import annotations

import platform
import re
import sys

import pytest
from click.testing import CliRunner

from cacheproxy.cli.main import main
from cacheproxy.config import Config, load_config
from cacheproxy.ops import runtime
from tests.test_ops import get, metric

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def test_the_budget_comes_from_flag_env_or_file(tmp_path):
    assert Config().memory_budget == 32 * 1024 * 1024
    file = tmp_path / "cacheproxy.toml"
    file.write_text('memory-budget = "32MiB"\n')
    assert load_config({}, {}, file).memory_budget == 32 * 1024 * 1024
    env = {"CACHEPROXY_MEMORY_BUDGET": "16MiB"}
    assert load_config({}, env, file).memory_budget == 16 * 1024 * 1024
    assert load_config({"memory_budget": "8MiB"}, env, file).memory_budget == 8 * 1024 * 1024


@pytest.mark.parametrize("value", ["lots", "0"])
def test_a_bad_budget_is_one_line_and_exit_code_2(value, tmp_path):
    result = CliRunner().invoke(
        main, ["serve", "--memory-budget", value, "--cache-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "memory" in result.output and len(result.output.strip().splitlines()) == 1


async def test_cache_sizes_are_metrics_and_on_the_status_page(proxy, upstream):
    root = proxy.url.removesuffix("simple/")
    status, _, _ = await get(proxy.url + "tinyalpha/")
    assert status == 200
    _, _, text = await get(root + "metrics")
    parsed = metric(text, "cacheproxy_memory_cache_bytes", cache="parsed")
    rendered = metric(text, "cacheproxy_memory_cache_bytes", cache="rendered")
    assert parsed > 0 and rendered > 0
    _, _, page = await get(root)
    shown = re.search(r'id="memory-rendered" data-bytes="(\d+)"', page)
    assert shown and int(shown.group(1)) == rendered
    assert 'id="memory-budget">32.0 MiB<' in page


def test_arenas_are_capped_unless_the_environment_says(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert runtime.limit_arenas() is False  # the operator's setting stands
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    # mallopt itself: glibc answers 1 when it took the setting.
    assert runtime.limit_arenas() is (sys.platform.startswith("linux") and _glibc())


def test_malloc_thresholds_are_fixed_unless_the_environment_says(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert runtime.fix_thresholds() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")
    assert runtime.fix_thresholds() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert runtime.fix_thresholds() is (sys.platform.startswith("linux") and _glibc())


def _glibc() -> bool:
    return platform.libc_ver()[0] == "glibc"

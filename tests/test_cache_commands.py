"""cacheproxy stats, purge and prune, run as processes beside a running proxy."""

import asyncio
import os
import subprocess
import sys

import aiohttp

BIG = "bigpkg-1.0-py3-none-any.whl"
ALPHA = "tinyalpha-2.0-py3-none-any.whl"


async def fetch(url):
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            return resp.status, await resp.read()


async def cli(cache_dir, *args):
    env = {**os.environ, "CACHEPROXY_CACHE_DIR": str(cache_dir)}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cacheproxy", *args],
        capture_output=True,
        text=True,
        env=env,
    )


async def warm(proxy):
    for path in (f"bigpkg/{BIG}", f"tinyalpha/{ALPHA}"):
        assert (await fetch(proxy.url + path))[0] == 200


async def test_stats_lists_size_and_projects(proxy):
    await warm(proxy)
    result = await cli(proxy.config.cache_dir, "stats")
    assert result.returncode == 0, result.stderr
    assert "files: 2 wheels and sdists" in result.stdout
    assert "(pages, metadata and files)" in result.stdout  # why the total is more than the list
    assert "pages and metadata not counted" in result.stdout
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("  ")]
    assert lines[0][0] == "bigpkg" and lines[0][1:] == ["8.0", "MiB"]


async def test_purge_forgets_a_project(proxy, upstream):
    await warm(proxy)
    result = await cli(proxy.config.cache_dir, "purge", "BigPkg")
    assert result.returncode == 0 and "of bigpkg" in result.stdout
    assert (await fetch(proxy.url + f"bigpkg/{BIG}"))[0] == 200
    assert upstream.index.file_hits(BIG) == 2  # fetched again
    assert upstream.index.file_hits(ALPHA) == 1


async def test_prune_to_a_size(proxy, upstream):
    await warm(proxy)
    result = await cli(proxy.config.cache_dir, "prune", "--max-size", "1MiB")
    assert result.returncode == 0, result.stderr
    await fetch(proxy.url + f"bigpkg/{BIG}")
    assert upstream.index.file_hits(BIG) == 2


async def test_prune_needs_a_rule_and_a_cache(tmp_path):
    result = await cli(tmp_path, "prune")
    assert result.returncode == 2
    result = await cli(tmp_path / "none", "prune", "--older-than", "1")
    assert result.returncode == 2 and "no cache at" in result.stderr

"""One store truth: purge, prune and verify run as other processes reach a running server's
memory at once, for pages (parsed and rendered copies, remembered 404s) and for files."""

import asyncio
import os
import subprocess
import sys

import aiohttp

ALPHA = "tinyalpha-2.0-py3-none-any.whl"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


async def get(url, **headers):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as resp:
            return resp.status, resp.headers.get("X-Cache"), await resp.read()


async def cli(cache_dir, *args):
    env = {**os.environ, "CACHEPROXY_CACHE_DIR": str(cache_dir)}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cacheproxy", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode in (0, 1), done.stderr
    return done


async def test_purge_from_another_process_reaches_the_hot_page(proxy, upstream):
    url = proxy.url + "tinyalpha/"
    assert (await get(url, **JSON))[:2] == (200, "miss")
    assert (await get(url, **JSON))[:2] == (200, "hit")  # rendered, from memory
    await cli(proxy.config.cache_dir, "purge", "tinyalpha")
    status, outcome, _ = await get(url, **JSON)
    assert (status, outcome) == (200, "miss")  # not the copy in memory
    assert upstream.index.page_hits("tinyalpha") == 2


async def test_purge_forgets_a_remembered_404(proxy, upstream, wheelhouse):
    url = proxy.url + "newcomer/"
    assert (await get(url))[:2] == (404, "miss")
    assert (await get(url))[:2] == (404, "hit")  # the negative entry
    upstream.index.add_wheel(wheelhouse[ALPHA]).project = "newcomer"
    await cli(proxy.config.cache_dir, "purge", "newcomer")
    assert (await get(url))[0] == 200


async def test_purge_reaches_a_cached_file(proxy, upstream):
    url = proxy.url + f"tinyalpha/{ALPHA}"
    assert (await get(url))[:2] == (200, "miss")
    assert (await get(url))[:2] == (200, "hit")
    await cli(proxy.config.cache_dir, "purge", "tinyalpha")
    assert (await get(url))[:2] == (200, "miss")
    assert upstream.index.file_hits(ALPHA) == 2


async def test_prune_reaches_the_parsed_and_rendered_pages(proxy, upstream):
    url = proxy.url + "tinyalpha/"
    await get(url, **JSON)
    assert (await get(url, **JSON))[1] == "hit"
    await cli(proxy.config.cache_dir, "prune", "--max-size", "1")  # everything goes
    assert (await get(url, **JSON))[:2] == (200, "miss")
    assert upstream.index.page_hits("tinyalpha") == 2


async def test_verify_reaches_a_running_server(proxy, upstream, wheel_bytes):
    url = proxy.url + f"tinyalpha/{ALPHA}"
    await get(url)
    await asyncio.to_thread(_damage_stored_file, proxy.config.cache_dir, len(wheel_bytes(ALPHA)))
    done = await cli(proxy.config.cache_dir, "verify")
    assert ALPHA in done.stdout
    status, outcome, body = await get(url)
    assert (status, outcome) == (200, "miss") and body == wheel_bytes(ALPHA)


def _damage_stored_file(cache_dir, size: int) -> None:
    stored = next(
        os.path.join(root, name)
        for root, _, names in os.walk(cache_dir / "store")
        for name in names
        if name.endswith(".val") and os.path.getsize(os.path.join(root, name)) == size
    )
    with open(stored, "r+b") as fh:
        fh.write(b"\0\0\0\0")

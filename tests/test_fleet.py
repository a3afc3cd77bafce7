"""A fleet of proxies sharing one real SeaweedFS bucket, with real uv installs through them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from cacheproxy.config import NamedIndex
from cacheproxy.http.keys import NAMED_INDEXES, SHARED
from tests.fakes.clients import clean_env, uv_pip_install
from tests.fakes.process import ProxyProcess
from tests.fakes.seaweed import ACCESS_KEY, SECRET_KEY, free_ports, s3_client

pytest_plugins = ("tests.fakes.seaweed_fixtures",)
SET = ("tinyalpha==2.0", "bigpkg==1.0")
FILES_SHARED = 'cacheproxy_cache_outcomes_total{kind="file",outcome="shared"}'
WHEELS = (
    "tinyalpha-2.0-py3-none-any.whl",
    "beta_helper-1.0-py3-none-any.whl",
    "bigpkg-1.0-py3-none-any.whl",
)


@pytest.fixture
def make_node(make_proxy, tmp_path, seaweed, s3_bucket):
    """A proxy with a cache of its own and the test's bucket as its shared tier."""

    async def start(name: str, endpoint: str | None = None, **settings):
        return await make_proxy(
            cache_dir=tmp_path / name,
            shared_cache=f"s3://{s3_bucket}/fleet",
            shared_cache_endpoint=endpoint or seaweed.endpoint,
            shared_cache_access_key_id=ACCESS_KEY,
            shared_cache_secret_access_key=SECRET_KEY,
            **settings,
        )

    return start


def installed(target):
    return sorted(p.name for p in target.iterdir() if p.name.endswith(".dist-info"))


def upstream_file_hits(upstream) -> int:
    return sum(n for (method, path), n in upstream.index.requests.items() if "/files/" in path)


async def fill(node, target) -> None:
    """Install the set through a node and wait until its uploads are in the bucket."""
    (await uv_pip_install(node.url, target, *SET)).assert_ok()
    await node.server.app[SHARED].drain()


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.text()


async def get_json(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def test_a_fresh_node_installs_from_the_shared_tier_even_with_the_upstream_down(
    make_node, upstream, tmp_path
):
    a = await make_node("a")
    await fill(a, tmp_path / "ta")
    tier = a.server.app[SHARED]
    assert tier.counters.uploads >= len(WHEELS) and not tier.counters.errors
    assert all([await tier.has_file(upstream.index.files[w].sha256) for w in WHEELS])

    upstream.index.reset_counts()
    b = await make_node("b")
    (await uv_pip_install(b.url, tmp_path / "tb", *SET)).assert_ok()
    assert installed(tmp_path / "tb") == installed(tmp_path / "ta")
    assert upstream_file_hits(upstream) == 0, upstream.index.requests
    assert upstream.index.page_hits("tinyalpha") == 0  # the shared page was within its TTL
    metrics = await get_text(b.url.removesuffix("simple/") + "metrics")
    outcomes = [line for line in metrics.splitlines() if line.startswith("cacheproxy_cache_out")]
    shared_files = [o for o in outcomes if o.startswith(FILES_SHARED)]
    assert shared_files and float(shared_files[0].split()[1]) >= len(WHEELS), outcomes
    assert 'cacheproxy_cache_outcomes_total{kind="page",outcome="shared"}' in metrics
    assert "cacheproxy_shared_hits_total{" in metrics
    assert "cacheproxy_shared_upload_backlog{" in metrics

    await upstream.stop()
    b2 = await make_node("b2")
    (await uv_pip_install(b2.url, tmp_path / "tb2", *SET)).assert_ok()
    assert installed(tmp_path / "tb2") == installed(tmp_path / "ta")
    # Past the TTL, the shared snapshot is revalidated; with the upstream gone, served stale.
    b3 = await make_node("b3", page_ttl=0)
    (await uv_pip_install(b3.url, tmp_path / "tb3", *SET)).assert_ok()
    assert (tmp_path / "tb3" / "tinyalpha" / "__init__.py").read_text() == '__version__ = "2.0"\n'


async def test_a_node_starts_and_installs_with_the_object_store_down(make_node, upstream, tmp_path):
    (closed,) = free_ports(1)
    node = await make_node("n", endpoint=f"http://127.0.0.1:{closed}")
    (await uv_pip_install(node.url, tmp_path / "t", *SET)).assert_ok()
    assert upstream_file_hits(upstream) == 2 * len(WHEELS)  # each wheel and its .metadata
    base = node.url.removesuffix("simple/")
    status, ready = await get_json(base + "ready")
    assert status == 200, "the node serves: a degraded shared tier does not make it unready"
    assert ready["shared_cache"].startswith("shared cache degraded: unreachable")
    assert "shared cache degraded" in await get_text(base)
    assert 'cacheproxy_shared_degraded{shared_cache="s3://' in await get_text(base + "metrics")


async def test_a_corrupt_shared_object_is_not_served_and_is_fetched_again(
    make_node, upstream, seaweed, tmp_path
):
    a = await make_node("a")
    await fill(a, tmp_path / "ta")
    tier = a.server.app[SHARED]
    helper = upstream.index.files["beta_helper-1.0-py3-none-any.whl"]
    async with s3_client(seaweed.endpoint) as client:
        key = tier.file_key(helper.sha256)
        await client.put_object(Bucket=tier.settings.bucket, Key=key, Body=b"not the wheel")
        # A page snapshot in the right envelope but not a page: asked upstream instead.
        page = b'{"format":1,"meta":{"fetched_at":1e12}}\n{"data":5}'
        page_key = tier.page_key("_main", "tinyalpha")
        await client.put_object(Bucket=tier.settings.bucket, Key=page_key, Body=page)
    upstream.index.reset_counts()
    b = await make_node("b")
    (await uv_pip_install(b.url, tmp_path / "tb", *SET)).assert_ok()
    assert installed(tmp_path / "tb") == installed(tmp_path / "ta")
    assert upstream_file_hits(upstream) == 1
    assert upstream.index.file_hits(helper.filename) == 1
    b_tier = b.server.app[SHARED]
    assert b_tier.counters.corrupt == 1 and b_tier.counters.errors["corrupt"] == 1
    assert b_tier.counters.errors["bad_page"] == 1 and upstream.index.page_hits("tinyalpha") == 1
    await b_tier.drain()  # node B offers the good copy it fetched
    async with b_tier.open_file(helper.sha256) as body:
        data = b"".join([chunk async for chunk in body.verified_chunks()])
    assert hashlib.sha256(data).hexdigest() == helper.sha256


@pytest.mark.parametrize("fault", ["no such bucket", "access denied"])
async def test_wrong_bucket_or_rejected_keys_stop_serve_with_exit_code_2(
    fault, seaweed, s3_bucket, tmp_path
):
    env = clean_env()
    bucket = "no-such-bucket-here" if fault == "no such bucket" else s3_bucket
    env.update(
        CACHEPROXY_SHARED_CACHE=f"s3://{bucket}",
        AWS_ENDPOINT_URL=seaweed.endpoint,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY if fault == "no such bucket" else "wrong-secret",
    )
    args = [sys.executable, "-m", "cacheproxy", "serve", "--port", "0"]
    args += ["--cache-dir", str(tmp_path / "c"), "--upstream", "http://127.0.0.1:9/simple/"]
    done = await asyncio.to_thread(subprocess.run, args, env=env, capture_output=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("cacheproxy: error: shared cache") and fault in lines[-1]
    assert "Traceback" not in done.stderr.decode() and "wrong-secret" not in done.stderr.decode()


class StallingRelay:
    """Forwards to the object store until `limit` bytes went towards it, then stops reading:
    an upload caught mid-way, with its first parts sent."""

    def __init__(self, port: int, limit: int) -> None:
        self.target, self.limit, self.sent = port, limit, 0
        self.stalled = asyncio.Event()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        await asyncio.gather(self._pipe(reader, up_writer, True), self._pipe(up_reader, writer))

    async def _pipe(self, reader, writer, towards_store: bool = False) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if towards_store:
                    self.sent += len(data)
                    if self.sent > self.limit:
                        self.stalled.set()
                        await asyncio.Event().wait()  # until the test ends
                writer.write(data)
                await writer.drain()
            writer.close()

    async def close(self) -> None:
        self._server.close()


async def test_kill_9_of_a_node_mid_upload_leaves_no_object_under_the_final_key(
    seaweed, s3_bucket, upstream, tmp_path, monkeypatch
):
    relay = StallingRelay(seaweed.ports["s3.port"], limit=6 * 1024 * 1024)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{await relay.start()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    node = await asyncio.to_thread(
        ProxyProcess, tmp_path / "c", upstream.simple_url, "--shared-cache", f"s3://{s3_bucket}"
    )
    try:
        big = upstream.index.files["bigpkg-1.0-py3-none-any.whl"]
        async with aiohttp.ClientSession() as session:
            async with session.get(node.url + "bigpkg/" + big.filename) as resp:
                assert hashlib.sha256(await resp.read()).hexdigest() == big.sha256
        await asyncio.wait_for(relay.stalled.wait(), 30)  # a multipart upload is under way
    finally:
        os.kill(node.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(node.proc.wait)
        await relay.close()
    async with s3_client(seaweed.endpoint) as client:
        listed = await client.list_objects_v2(Bucket=s3_bucket, Prefix="files/")
        assert listed.get("Contents", []) == []
        uploads = await client.list_multipart_uploads(Bucket=s3_bucket)
        assert [u["Key"] for u in uploads.get("Uploads", [])] == [
            f"files/sha256/{big.sha256[:2]}/{big.sha256}"
        ]  # left for `prune --shared` or a lifecycle rule to abort


async def test_cli_stats_verify_and_prune_the_shared_tier(
    make_node, upstream, seaweed, s3_bucket, tmp_path
):
    a = await make_node("a")
    await fill(a, tmp_path / "ta")
    tier = a.server.app[SHARED]
    async with s3_client(seaweed.endpoint) as client:
        helper = upstream.index.files["beta_helper-1.0-py3-none-any.whl"]
        key = tier.file_key(helper.sha256)
        await client.put_object(Bucket=s3_bucket, Key=key, Body=b"garbage")
    env = clean_env()
    env.update(AWS_ENDPOINT_URL=seaweed.endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY)
    env.update(AWS_SECRET_ACCESS_KEY=SECRET_KEY)

    def cli(*args):
        where = ["--cache-dir", str(tmp_path / "a"), "--shared-cache", f"s3://{s3_bucket}/fleet"]
        command = [sys.executable, "-m", "cacheproxy", *args, *where]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    stats, verify, again, prune = await asyncio.to_thread(
        lambda: [cli("stats"), cli("verify", "--shared"), cli("verify", "--shared"),
                 cli("prune", "--shared", "--older-than", "0")]
    )  # fmt: skip
    objects = 2 * len(WHEELS)  # each wheel and its .metadata
    assert f"in {objects} files" in stats.stdout and "s3://" in stats.stdout, stats.stderr
    assert SECRET_KEY not in stats.stdout + stats.stderr
    assert verify.returncode == 1 and helper.sha256 in verify.stdout
    assert again.returncode == 0 and f"checked {objects - 1} shared objects" in again.stdout
    assert (
        prune.returncode == 0 and f"removed {objects - 1 + 3} shared objects"
    )  # and 3 pages in prune.stdout


async def test_named_indexes_share_one_tier_and_keep_their_pages_apart(
    make_node, upstream, tmp_path
):
    node = await make_node("n", indexes=(NamedIndex("other", upstream.simple_url),))
    other = node.url.removesuffix("simple/") + "index/other/simple/"
    (await uv_pip_install(other, tmp_path / "t", "tinyalpha==1.0")).assert_ok()
    tier = node.server.app[SHARED]
    assert node.server.app[NAMED_INDEXES]["other"][SHARED] is tier
    await tier.drain()
    assert await tier.get_page("other", "tinyalpha") is not None
    assert await tier.get_page("_main", "tinyalpha") is None

"""The shared object-store tier against a real SeaweedFS: files, pages, faults, maintenance."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import sys
import textwrap
import tracemalloc

import pytest

from cacheproxy.config import SharedCacheSettings
from cacheproxy.errors import SharedCacheConfigError, SharedCacheError
from cacheproxy.storage.s3.breaker import CLOSED, OPEN, CircuitBreaker
from cacheproxy.storage.s3.tier import SharedTier
from tests.fakes.clock import FakeClock
from tests.fakes.seaweed import free_ports, s3_client
from tests.fakes.tcp_switch import TcpSwitch

pytest_plugins = ("tests.fakes.seaweed_fixtures",)
MiB = 1024 * 1024


def write_file(path, size: int) -> str:
    """A file of random bytes written in pieces (never whole in memory); its sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for _ in range(0, size, MiB):
            block = os.urandom(min(MiB, size - fh.tell()))
            digest.update(block)
            fh.write(block)
    return digest.hexdigest()


@pytest.fixture
async def tier(shared_settings):
    tier = SharedTier(shared_settings)
    await tier.open()
    yield tier
    await tier.close()


async def read_all(tier: SharedTier, sha256: str, offset: int = 0) -> bytes | None:
    async with tier.open_file(sha256, offset) as body:
        if body is None:
            return None
        return b"".join([chunk async for chunk in body.chunks()])


def test_settings_from_url_environment_and_redaction():
    env = {
        "AWS_ENDPOINT_URL": "http://objects.internal:8333/",
        "AWS_REGION": "eu-west-3",
        "AWS_ACCESS_KEY_ID": "AKIAFROMENV",
        "AWS_SECRET_ACCESS_KEY": "secret-from-env",
        "AWS_SESSION_TOKEN": "token-from-env",
    }
    settings = SharedCacheSettings.from_url(
        "s3://ci-cache/fleet/a/", env, access_key_id="filekey", secret_access_key="file-secret"
    )
    assert (settings.bucket, settings.prefix) == ("ci-cache", "fleet/a")
    assert settings.endpoint == "http://objects.internal:8333"
    assert (settings.region, settings.access_key_id) == ("eu-west-3", "AKIAFROMENV")
    assert settings.session_token == "token-from-env"
    assert settings.key("files", "x") == "fleet/a/files/x"
    for shown in (repr(settings), str(settings)):
        assert "secret" not in shown and "token-from-env" not in shown, shown
    assert str(settings) == "s3://ci-cache/fleet/a at http://objects.internal:8333"
    s3_specific = {"AWS_ENDPOINT_URL_S3": "https://s3.internal", **env}
    assert SharedCacheSettings.from_url("s3://abc", s3_specific).endpoint == "https://s3.internal"
    from_file = SharedCacheSettings.from_url("s3://abc", {}, region="ap-south-1")
    assert (from_file.region, from_file.prefix, from_file.access_key_id) == ("ap-south-1", "", None)


@pytest.mark.parametrize(
    "url",
    ["ci-cache", "http://ci-cache", "s3://ab", "s3://" + "a" * 64, "s3://Upper", "s3://a_b/c"],
)
def test_bad_shared_cache_url_is_one_line(url):
    with pytest.raises(SharedCacheError) as caught:
        SharedCacheSettings.from_url(url, {})
    assert "\n" not in str(caught.value)


def test_half_key_pair_and_endpoint_with_credentials_are_refused():
    with pytest.raises(SharedCacheError, match="both"):
        SharedCacheSettings.from_url("s3://abc", {"AWS_ACCESS_KEY_ID": "only-the-id"})
    with pytest.raises(SharedCacheError, match="credentials") as caught:
        SharedCacheSettings.from_url("s3://abc", {"AWS_ENDPOINT_URL": "http://u:hunter2@h:1"})
    assert "hunter2" not in str(caught.value)


def test_breaker_lets_one_probe_through_after_the_cooldown():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown=10, clock=clock)
    breaker.failure("timeout")
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure("timeout")
    assert breaker.state == OPEN and not breaker.allow()
    clock.now += 10
    assert breaker.allow() and not breaker.allow()  # one probe, the others still skip
    breaker.failure("timeout again")
    assert breaker.state == OPEN and breaker.reason == "timeout again"
    clock.now += 10
    assert breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow() and breaker.allow()


async def test_file_roundtrip_ranged_read_and_key_layout(tier, tmp_path, seaweed, s3_bucket):
    path = tmp_path / "tiny-1.0-py3-none-any.whl"
    sha256 = write_file(path, 300_000)
    assert not await tier.has_file(sha256)
    assert await read_all(tier, sha256) is None
    assert await tier.put_file(sha256, path, 300_000)
    assert await tier.has_file(sha256)
    assert await read_all(tier, sha256) == path.read_bytes()
    async with tier.open_file(sha256, 299_990) as body:
        assert (body.size, body.length) == (300_000, 10)
        assert b"".join([c async for c in body.chunks()]) == path.read_bytes()[-10:]
    assert not await tier.put_file(sha256, path, 300_000), "uploaded twice"
    async with s3_client(seaweed.endpoint) as client:
        listing = await client.list_objects_v2(Bucket=s3_bucket)
    assert [o["Key"] for o in listing["Contents"]] == [f"fleet/files/sha256/{sha256[:2]}/{sha256}"]
    assert tier.counters.hits == 2 and tier.counters.misses == 1
    assert tier.counters.bytes_written == 300_000 and tier.counters.uploads == 1


async def test_large_file_goes_by_multipart_and_streams_back_in_bounded_memory(tier, tmp_path):
    size = 24 * MiB
    path = tmp_path / "big.whl"
    sha256 = await asyncio.to_thread(write_file, path, size)
    tracemalloc.start()
    try:
        assert await tier.put_file(sha256, path, size)
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        async with tier.open_file(sha256) as body:
            received = 0
            async for chunk in body.verified_chunks():
                received += len(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    print("peaks", upload_peak / MiB, read_peak / MiB)
    # One 5 MiB part (and a copy or two of it) at a time, not the 24 MiB file.
    assert upload_peak < 14 * MiB, upload_peak
    assert read_peak < 6 * MiB, read_peak
    async with s3_client(tier.settings.endpoint) as client:
        head = await client.head_object(Bucket=tier.settings.bucket, Key=tier.file_key(sha256))
    assert head["ETag"].strip('"').endswith("-5"), head["ETag"]  # five parts


async def test_concurrent_uploads_of_one_file_leave_it_whole(shared_settings, tmp_path):
    path = tmp_path / "same.whl"
    sha256 = write_file(path, 9 * MiB)  # above the multipart threshold
    nodes = [SharedTier(shared_settings) for _ in range(3)]
    for node in nodes:
        await node.open()
    try:
        written = await asyncio.gather(*(n.put_file(sha256, path, 9 * MiB) for n in nodes))
        # Usually one write and two refusals; but SeaweedFS checks If-None-Match on the
        # completion of a multipart upload without a lock, and under load two racing
        # completions now and then both succeed. The key is the content's hash, so the
        # second leaves the same bytes; test_conditional_put_keeps_the_existing_object shows
        # the refusal itself.
        assert True in written
        assert await read_all(nodes[0], sha256) == path.read_bytes()
    finally:
        for node in nodes:
            await node.close()


async def test_conditional_put_keeps_the_existing_object(tier, tmp_path, seaweed):
    path = tmp_path / "f.whl"
    sha256 = write_file(path, 1000)
    key = tier.file_key(sha256)
    async with s3_client(seaweed.endpoint) as client:
        await client.put_object(Bucket=tier.settings.bucket, Key=key, Body=b"first writer")
        # Past the existence check, as when two nodes race: the store refuses the overwrite.
        with await asyncio.to_thread(open, path, "rb") as fh:
            assert not await tier.upload(sha256, fh, 1000)
        answer = await client.get_object(Bucket=tier.settings.bucket, Key=key)
        assert await answer["Body"].read() == b"first writer"
    assert tier.conditional_writes and not tier.degraded


async def test_pages_roundtrip_with_their_meta(tier):
    assert await tier.get_page("_main", "tinyalpha") is None
    meta = {"etag": '"abc"', "last_modified": "Mon, 01 Jan 2024 00:00:00 GMT", "fetched_at": 17.5}
    body = b'{"meta": {"api-version": "1.1"}, "files": []}\n\xff'
    assert await tier.put_page("_main", "tinyalpha", body, meta)
    assert await tier.get_page("_main", "tinyalpha") == (body, meta)
    assert await tier.get_page("internal", "tinyalpha") is None  # pages are per index
    assert await tier.put_page("_main", "tinyalpha", b"newer", {**meta, "fetched_at": 99.0})
    assert await tier.get_page("_main", "tinyalpha") == (b"newer", {**meta, "fetched_at": 99.0})


async def test_wrong_bucket_at_open_is_a_config_error(shared_settings):
    tier = SharedTier(dataclasses.replace(shared_settings, bucket="no-such-bucket-here"))
    with pytest.raises(SharedCacheConfigError, match="no such bucket") as caught:
        await tier.open()
    assert "\n" not in str(caught.value)


async def test_rejected_keys_at_open_are_a_config_error(shared_settings):
    wrong = dataclasses.replace(shared_settings, secret_access_key="not-the-secret-key")
    with pytest.raises(SharedCacheConfigError, match="access denied") as caught:
        await SharedTier(wrong).open()
    assert "not-the-secret-key" not in str(caught.value)
    stranger = dataclasses.replace(wrong, access_key_id="unknownkey")
    with pytest.raises(SharedCacheConfigError, match="access denied"):
        await SharedTier(stranger).open()


async def test_store_down_at_start_is_a_warning_and_reads_answer_none(shared_settings, caplog):
    (closed_port,) = free_ports(1)
    down = dataclasses.replace(shared_settings, endpoint=f"http://127.0.0.1:{closed_port}")
    tier = SharedTier(down)
    with caplog.at_level(logging.WARNING):
        await tier.open()
    try:
        assert tier.degraded and "unreachable" in tier.reason
        assert any("does not answer" in r.getMessage() for r in caplog.records)
        assert await tier.get_page("_main", "x") is None
        assert await read_all(tier, "0" * 64) is None
        assert tier.counters.skipped == 2 and tier.counters.errors["connection"] == 1
        assert not tier.enqueue_page("_main", "x", b"page", {})
    finally:
        await tier.close()


async def test_breaker_opens_skips_the_network_and_recovers(shared_settings, seaweed, tmp_path):
    switch = await TcpSwitch("127.0.0.1", seaweed.ports["s3.port"]).start()
    clock = FakeClock()
    settings = dataclasses.replace(
        shared_settings, endpoint=f"http://127.0.0.1:{switch.port}", failure_threshold=3
    )
    tier = SharedTier(settings, clock=clock)
    await tier.open()
    try:
        path = tmp_path / "f.whl"
        sha256 = write_file(path, 5000)
        assert await tier.put_file(sha256, path, 5000) and not tier.degraded
        switch.set_down()
        for _ in range(3):
            assert await read_all(tier, sha256) is None
        assert tier.degraded and tier.state == OPEN and "connection" in tier.reason
        attempts = switch.connections
        for _ in range(20):
            assert await read_all(tier, sha256) is None
            assert not await tier.has_file(sha256)
        assert switch.connections == attempts, "an open breaker still used the network"
        assert tier.counters.skipped == 40
        switch.up = True
        assert await read_all(tier, sha256) is None  # still cooling down
        clock.now += settings.cooldown
        assert await read_all(tier, sha256) == path.read_bytes()  # the probe
        assert tier.state == CLOSED and tier.reason == ""
    finally:
        await tier.close()
        await switch.close()


async def test_a_corrupt_object_is_detected_and_removed(tier, tmp_path, seaweed):
    good, bad = tmp_path / "good.whl", tmp_path / "bad.whl"
    good_sha, bad_sha = write_file(good, 4000), write_file(bad, 4000)
    other_sha = write_file(tmp_path / "other.whl", 10)
    for sha, path in ((good_sha, good), (bad_sha, bad), (other_sha, tmp_path / "other.whl")):
        assert await tier.put_file(sha, path, path.stat().st_size)
    async with s3_client(seaweed.endpoint) as client:
        for sha in (bad_sha, other_sha):
            await client.put_object(Bucket=tier.settings.bucket, Key=tier.file_key(sha), Body=b"x")
    dest = tmp_path / "copy"
    assert await tier.download_verified(bad_sha, dest) is None
    assert not dest.exists() and tier.counters.corrupt == 1
    assert not await tier.has_file(bad_sha), "the corrupt object was left"
    assert await tier.download_verified(good_sha, dest) == 4000
    assert dest.read_bytes() == good.read_bytes()
    report = await tier.verify(remove=True)
    assert (report.checked, report.corrupt, report.removed) == (2, [other_sha], 1)
    assert [obj.sha256 async for obj in tier.iter_files()] == [good_sha]


CHILD = textwrap.dedent(
    """
    import asyncio, dataclasses, json, sys
    from pathlib import Path
    from cacheproxy.storage.s3.tier import SharedTier
    from cacheproxy.config import SharedCacheSettings

    async def main():
        args = json.loads(sys.argv[1])
        tier = SharedTier(SharedCacheSettings(**args["settings"]))
        await tier.open()
        upload_part = tier.bucket.client.upload_part

        async def then_hang(**kwargs):
            answer = await upload_part(**kwargs)
            if kwargs["PartNumber"] == 2:
                print("two parts sent", flush=True)
                await asyncio.to_thread(sys.stdin.readline)  # the test kills us here
            return answer

        tier.bucket.client.upload_part = then_hang
        await tier.put_file(args["sha256"], Path(args["path"]), args["size"])

    asyncio.run(main())
    """
)


async def test_kill_9_mid_multipart_upload_leaves_no_object(shared_settings, tmp_path):
    size = 16 * MiB
    path = tmp_path / "big.whl"
    sha256 = await asyncio.to_thread(write_file, path, size)
    args = {"settings": dataclasses.asdict(shared_settings), "sha256": sha256}
    args.update(path=str(path), size=size)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, json.dumps(args),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.strip() == b"two parts sent"
    finally:
        child.kill()
        await child.wait()
    tier = SharedTier(shared_settings)
    await tier.open()
    try:
        assert not await tier.has_file(sha256)
        assert [obj async for obj in tier.iter_files()] == []
        report = await tier.prune_older_than(0)
        assert report.aborted_uploads == 1  # the dead node's parts
    finally:
        await tier.close()


async def test_upload_queue_backlog_drain_and_vanished_files(shared_settings, tmp_path):
    tier = SharedTier(shared_settings, upload_workers=1, upload_backlog=4)
    await tier.open()
    try:
        files = []
        for n in range(4):
            path = tmp_path / f"f{n}.whl"
            files.append((write_file(path, 1000 + n), path, 1000 + n))
        files[3][1].unlink()  # evicted locally before its upload ran
        assert all(tier.enqueue_file(*f) for f in files)
        assert tier.backlog == 4
        assert not tier.enqueue_page("_main", "p", b"page", {})  # full
        assert tier.counters.dropped_uploads == 1
        await tier.drain()
        assert tier.backlog == 0
        assert [await tier.has_file(sha) for sha, _, _ in files] == [True, True, True, False]
        assert tier.enqueue_page("_main", "p", b"page", {"etag": "1"})
        await tier.drain()
        assert await tier.get_page("_main", "p") == (b"page", {"etag": "1"})
    finally:
        await tier.close()


async def test_prune_by_age(tier, tmp_path):
    path = tmp_path / "f.whl"
    sha256 = write_file(path, 100)
    assert await tier.put_file(sha256, path, 100)
    assert await tier.put_page("_main", "p", b"page", {})
    assert (await tier.prune_older_than(3600)).removed == 0
    report = await tier.prune_older_than(0)
    assert (report.removed, report.bytes) == (2, 100 + len(b'{"format":1,"meta":{}}\npage'))
    assert not await tier.has_file(sha256) and await tier.get_page("_main", "p") is None


def test_shared_cache_setting_from_flag_env_file_and_per_index(tmp_path):
    from cacheproxy.config import load_config
    from cacheproxy.errors import ConfigError

    file = tmp_path / "cacheproxy.toml"
    file.write_text(
        'shared-cache = "s3://from-file/fleet"\n'
        'shared-cache-endpoint = "http://objects.internal:8333"\n'
        'shared-cache-access-key-id = "filekey"\n'
        'shared-cache-secret-access-key = "file-secret"\n'
        "[indexes.internal]\n"
        'url = "https://pkgs.example.com/simple/"\n'
        'shared_cache = "s3://internal-cache"\n'
        "[indexes.cpu]\n"
        'url = "https://wheels.example.org/cpu/"\n'
    )
    config = load_config({}, {}, file)
    settings = config.shared_cache_settings({})
    assert (settings.bucket, settings.prefix) == ("from-file", "fleet")
    assert settings.endpoint == "http://objects.internal:8333"
    assert settings.secret_access_key == "file-secret" and "file-secret" not in repr(config)
    env = {"CACHEPROXY_SHARED_CACHE": "s3://from-env", "AWS_ACCESS_KEY_ID": "envkey"}
    env["AWS_SECRET_ACCESS_KEY"] = "env-secret"
    from_env = load_config({}, env, file)
    assert from_env.shared_cache_settings(env).access_key_id == "envkey"
    assert load_config({"shared_cache": "s3://from-flag"}, env, file).shared_cache == (
        "s3://from-flag"
    )
    internal, cpu = (config.for_index(config.index_named(n)) for n in ("internal", "cpu"))
    assert (internal.shared_cache, cpu.shared_cache) == ("s3://internal-cache", config.shared_cache)
    assert load_config({}, {}).shared_cache_settings({}) is None
    with pytest.raises(ConfigError, match="invalid --shared-cache: shared cache bucket"):
        load_config({"shared_cache": "s3://x"}, {})

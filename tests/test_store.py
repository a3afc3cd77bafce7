"""The store's read path: hits take no write transaction, and eviction still goes by last use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path

import diskcache

from cacheproxy.storage.local import Store
from cacheproxy.storage.records import CachedPage
from cacheproxy.storage.versions import CHANGE_CHECK_SECONDS


def _stage(store: Store, size: int, fill: bytes) -> Path:
    path = store.new_staging_path()
    path.write_bytes(fill * size)
    return path


def _access_times(cache_dir: Path) -> dict[str, float]:
    with sqlite3.connect(cache_dir / "store" / "cache.db") as db:
        rows = db.execute("SELECT filename, access_time FROM Cache WHERE filename IS NOT NULL")
        return {Path(name).name: at for name, at in rows}


def test_a_hit_writes_nothing_until_the_access_times_are_flushed(tmp_path: Path) -> None:
    store = Store(tmp_path, size_limit=2**30)
    store.open_sync()
    try:
        stored = store.commit_file_sync("demo", "demo-1.0.whl", _stage(store, 10, b"a"), "d" * 64)
        before = _access_times(tmp_path)[Path(stored.path).name]
        # data_version changes when another connection commits: the store's, for one.
        with contextlib.closing(sqlite3.connect(tmp_path / "store" / "cache.db")) as db:
            data_version = db.execute("PRAGMA data_version").fetchone()[0]
            found = store.find_file_sync("demo", "demo-1.0.whl")
            assert found == stored
            assert found.size == 10 and found.sha256 == "d" * 64
            # Nothing was written: the read did not touch the database.
            assert _access_times(tmp_path)[Path(stored.path).name] == before
            assert db.execute("PRAGMA data_version").fetchone()[0] == data_version
        store.entries.flush_access_times()
        assert _access_times(tmp_path)[Path(stored.path).name] > before
    finally:
        store.close_sync()


def test_eviction_keeps_the_file_read_last(tmp_path: Path) -> None:
    store = Store(tmp_path, size_limit=1_280_000)
    store.open_sync()
    try:
        for number in range(12):
            name = f"f{number}-1.0.whl"
            assert store.commit_file_sync("p", name, _stage(store, 100_000, b"x"), "1" * 64)
        assert store.find_file_sync("p", "f0-1.0.whl") is not None  # the oldest, read last
        # Over the limit: diskcache evicts the 10 least recently used, f1 to f10.
        assert store.commit_file_sync("p", "f12-1.0.whl", _stage(store, 100_000, b"x"), "1" * 64)
        kept = {n for n in range(13) if store.find_file_sync("p", f"f{n}-1.0.whl") is not None}
        assert kept == {0, 11, 12}
    finally:
        store.close_sync()


def test_a_file_removed_behind_the_store_is_a_miss(tmp_path: Path) -> None:
    store = Store(tmp_path, size_limit=2**30)
    store.open_sync()
    try:
        stored = store.commit_file_sync("p", "gone-1.0.whl", _stage(store, 10, b"g"), "4" * 64)
        os.unlink(stored.path)
        assert store.find_file_sync("p", "gone-1.0.whl") is None
        assert store.find_file_sync("p", "never-1.0.whl") is None
    finally:
        store.close_sync()


async def test_pages_and_facts_read_back(tmp_path: Path) -> None:
    store = Store(tmp_path, size_limit=2**30)
    await store.open()
    try:
        assert await store.get_page("demo") is None
        assert await store.file_facts("demo") == {}
        page = CachedPage(status=404, page=None, fetched_at=1.0)
        await store.put_page("demo", page)
        assert (await store.get_page("demo")).status == 404
        await store.learn("demo", "demo-1.0.whl", size=10)
        assert await store.file_facts("demo") == {"demo-1.0.whl": {"size": 10}}
    finally:
        await store.close()


def test_access_times_written_at_close_survive_a_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path, size_limit=2**30)
    store.open_sync()
    stored = store.commit_file_sync("p", "kept-1.0.whl", _stage(store, 10, b"k"), "5" * 64)
    before = _access_times(tmp_path)[Path(stored.path).name]
    store.find_file_sync("p", "kept-1.0.whl")
    store.close_sync()
    assert _access_times(tmp_path)[Path(stored.path).name] > before


def test_a_failed_access_time_flush_loses_only_those_times(tmp_path: Path, caplog) -> None:
    """A full disk (or a database that cannot be written) must not fail a hit or a shutdown."""
    store = Store(tmp_path, size_limit=2**30)
    store.open_sync()
    stored = store.commit_file_sync("demo", "demo-1.0.whl", _stage(store, 10, b"a"), "d" * 64)
    assert store.find_file_sync("demo", "demo-1.0.whl") == stored
    real_transact = store.cache.transact

    def disk_full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    store.cache.transact = disk_full
    store.entries.flush_access_times()  # no exception
    assert "could not record cache access times" in caplog.text
    store.cache.transact = real_transact
    assert store.find_file_sync("demo", "demo-1.0.whl") == stored  # later times still recorded
    store.close_sync()


def test_a_read_never_waits_for_a_writer_of_this_process(tmp_path: Path) -> None:
    """A hit that finds the access times due writes them only if no other thread is writing:
    it must not wait behind a page or file being stored."""
    store = Store(tmp_path, size_limit=2**30, access_flush_seconds=0.0)  # always due
    store.open_sync()
    try:
        stored = store.commit_file_sync("demo", "demo-1.0.whl", _stage(store, 10, b"a"), "d" * 64)
        holding, release = threading.Event(), threading.Event()

        def writer() -> None:
            with store.entries.write_lock:
                holding.set()
                release.wait(10)

        thread = threading.Thread(target=writer)
        thread.start()
        holding.wait(10)
        started = time.monotonic()
        assert store.find_file_sync("demo", "demo-1.0.whl") == stored
        waited = time.monotonic() - started
        release.set()
        thread.join()
        assert waited < 5, "the read waited for the writer"
        assert store.entries.pending_access_times, "the read's time is kept for a later flush"
    finally:
        store.close_sync()


def test_writers_on_many_threads_all_land(tmp_path: Path) -> None:
    store = Store(tmp_path, size_limit=2**30)
    store.open_sync()
    try:

        def write(n: int) -> None:
            entry = CachedPage(status=200, page=None, fetched_at=float(n))
            store.put_page_sync(f"project-{n}", entry)
            store.learn_sync(f"project-{n % 3}", f"file-{n}.whl", {"size": n})
            store.commit_file_sync(f"project-{n}", "a.whl", _stage(store, 10, b"x"), "e" * 64)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for n in range(12):
            assert store.read_page(f"project-{n}") is not None
            assert store.find_file_sync(f"project-{n}", "a.whl") is not None
        facts = {}
        for k in range(3):
            facts.update(store.file_facts_sync(f"project-{k}"))
        assert facts == {f"file-{n}.whl": {"size": n} for n in range(12)}
    finally:
        store.close_sync()


def test_stored_files_are_counted_again_when_files_come_or_go(tmp_path: Path) -> None:
    store = Store(tmp_path, size_limit=2**30)
    store.open_sync()
    try:
        for name in ("a-1.0.whl", "b-1.0.whl"):
            store.commit_file_sync("demo", name, _stage(store, 10, b"f"), "f" * 64)
        # A page large enough for diskcache to keep it as a file is not a stored file.
        big = CachedPage(status=200, page=None, fetched_at=1.0, etag="x" * 100_000)
        store.put_page_sync("demo", big)
        assert store.usage_sync()[2] == 2
        store.commit_file_sync("other", "c-1.0.whl", _stage(store, 10, b"c"), "c" * 64)
        assert store.usage_sync()[2] == 3
        store.purge_project("demo")
        assert store.usage_sync()[2] == 1
    finally:
        store.close_sync()


async def test_a_version_bumped_by_another_process_is_seen_at_the_next_look(
    tmp_path: Path,
) -> None:
    server, command = Store(tmp_path, size_limit=2**30), Store(tmp_path, size_limit=2**30)
    await server.open()
    command.open_sync(clean_staging=False)
    try:
        before = await server.page_version("demo")
        assert await server.page_version("demo") == before  # remembered
        command.put_page_sync("demo", CachedPage(status=404, page=None, fetched_at=1.0))
        await asyncio.sleep(CHANGE_CHECK_SECONDS * 2)
        after = await server.page_version("demo")
        assert after != before
        command.prune(max_size=1, older_than=None, now=time.time())  # evicts every counter
        await asyncio.sleep(CHANGE_CHECK_SECONDS * 2)
        assert await server.page_version("demo") not in (before, after)
    finally:
        command.close_sync()
        await server.close()


def test_no_thread_maps_the_database_and_other_processes_keep_its_settings(
    tmp_path: Path,
) -> None:
    """Each thread's connections read without a memory map and with a small page cache, for
    this process only: mapped twice per thread (a handle for reads, one for writes), the
    database was counted in the RSS as many times."""
    store = Store(tmp_path, size_limit=2**30)
    store.open_sync()
    for n in range(8):
        store.put_page_sync(f"p{n}", CachedPage(200, None, 1.0, etag="e" * 1000))
    store.close_sync()  # the pages move from the write-ahead log into the database
    store = Store(tmp_path, size_limit=2**30)
    store.open_sync()
    database = str(tmp_path / "store" / "cache.db")
    try:

        def read() -> None:
            for n in range(8):
                assert store.read_page(f"p{n}") is not None
            store.entries.flush_access_times()

        threads = [threading.Thread(target=read) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        read()
        if os.path.exists("/proc/self/maps"):
            with open("/proc/self/maps") as maps:
                mapped = [line for line in maps if line.rstrip().endswith(database)]
            assert mapped == []
    finally:
        store.close_sync()
    other = diskcache.Cache(str(tmp_path / "store"))
    assert other.sqlite_mmap_size == 2**26 and other.sqlite_cache_size == 2**13
    other.close()

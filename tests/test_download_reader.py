"""Clients reading a running download hold no bytes while they wait for more of it."""

from __future__ import annotations

import asyncio
import os
import tracemalloc

from cacheproxy.files.downloads import READ_CHUNK, Download
from cacheproxy.protocol.page import FileSource

READERS = 50


async def read_all(chunks, got: list[int], had: int, reached: asyncio.Event) -> None:
    async for chunk in chunks:
        got.append(len(chunk))
        del chunk  # as the file response does: the client's transport has taken it
        if sum(got) >= had:
            reached.set()


async def test_readers_waiting_for_more_of_a_download_hold_none_of_it(tmp_path):
    source = FileSource("http://upstream.invalid/f.whl", None, None, None)
    download = Download("demo", "f.whl", source, tmp_path / "staging")
    written = 3 * READ_CHUNK + 1  # the last byte is held back until the download ends
    os.write(download.fd, os.urandom(written))
    download.advance(written)
    readers = [download.reader() for _ in range(READERS)]
    got: list[list[int]] = [[] for _ in readers]
    reached = [asyncio.Event() for _ in readers]
    tracemalloc.start()
    try:
        tasks = [
            asyncio.create_task(read_all(reader.chunks(0, None), sizes, written - 1, event))
            for reader, sizes, event in zip(readers, got, reached, strict=True)
        ]
        await asyncio.gather(*(event.wait() for event in reached))
        await asyncio.sleep(0.05)  # every reader is now waiting for the download to move
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One read kept by each waiting reader would be 50 x 64 KiB = 3.2 MiB.
    assert held < READERS * READ_CHUNK // 4, held
    download.commit()
    await asyncio.gather(*tasks)
    assert all(sum(sizes) == written for sizes in got)
    for reader in readers:
        await reader.aclose()
    download.close()

"""HEAD and Range on a cold 100 MB wheel, as uv sends them when an index has no metadata.

A local upstream serves the wheel over a throttled link (--mbps), so the whole download takes
seconds; the HEAD and the ranged reads must not wait for it. Prints each request's latency next
to the time of the full download. Run by hand: .venv/bin/python benchmarks/cold_range.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession, web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.process import ProxyProcess  # noqa: E402
from tests.fakes.upstream import UpstreamIndex, make_app  # noqa: E402
from tests.fakes.wheels import build_wheel  # noqa: E402


async def timed(session: ClientSession, method: str, url: str, **headers: str) -> tuple[float, int]:
    started = time.perf_counter()
    async with session.request(method, url, headers=headers) as resp:
        body = await resp.read()
        assert resp.status in (200, 206), resp.status
    return time.perf_counter() - started, len(body)


async def main(size_mb: int, mbps: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp) / "wheels", "hugewheel", "1.0", payload_size=size_mb * 2**20)
        index = UpstreamIndex()
        entry = index.add_wheel(wheel, with_metadata=False)
        index.chunk_size = 64 * 1024
        index.chunk_delay = index.chunk_size / (mbps * 1e6 / 8)  # a link of that bandwidth
        runner = web.AppRunner(make_app(index))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        proxy = await asyncio.to_thread(
            ProxyProcess, Path(tmp) / "cache", f"http://127.0.0.1:{port}/simple/"
        )
        try:
            async with ClientSession() as session:
                url = proxy.url + f"hugewheel/{wheel.name}"
                await timed(session, "GET", proxy.url + "hugewheel/")
                rows = [
                    ("HEAD (cold)", *await timed(session, "HEAD", url)),
                    (
                        "Range bytes=-65536 (cold)",
                        *await timed(session, "GET", url, Range="bytes=-65536"),
                    ),
                    (
                        "Range bytes=1000-9999 (cold)",
                        *await timed(session, "GET", url, Range="bytes=1000-9999"),
                    ),
                    ("GET whole file (joins the download)", *await timed(session, "GET", url)),
                    ("GET whole file (warm)", *await timed(session, "GET", url)),
                ]
        finally:
            await asyncio.to_thread(proxy.stop)
            await runner.cleanup()
    print(f"{size_mb} MiB wheel, upstream link {mbps:g} Mbit/s, no upstream metadata")
    for name, seconds, length in rows:
        print(f"  {name:<38} {seconds * 1000:>9.1f} ms  {length:>10} bytes")
    hits = index.file_hits(entry.filename)
    print(f"  upstream file GETs: {hits} (forwarded ranges + one full download)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--mbps", type=float, default=200.0)
    args = parser.parse_args()
    asyncio.run(main(args.size_mb, args.mbps))

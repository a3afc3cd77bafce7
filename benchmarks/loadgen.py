"""A small HTTP/1.1 load generator for the serving benchmarks: keep-alive connections, each
sending one GET after another for a fixed time, counting bytes and timing every request.

Bodies are counted, never kept or copied, so one process can read a few GB/s; it runs as its
own process so it does not share an interpreter with whatever it measures.

    .venv/bin/python benchmarks/loadgen.py --base http://127.0.0.1:PORT --paths FILE \
        --connections 200 --duration 10 [--header 'Accept: ...'] [--interval-ms 200]

--interval-ms paces each connection (one request every that many ms, or at once when the last
answer came later): an open-loop rate instead of the closed loop of back-to-back requests.
Prints one JSON object: requests, errors, bytes, seconds, req/s, GB/s, latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit


class _Connection(asyncio.Protocol):
    """One keep-alive connection; responses must carry Content-Length (the proxy's do)."""

    def __init__(self, counter: list[int]) -> None:
        self.counter = counter  # shared [bytes]: body bytes received by all connections
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.remaining: int | None = None
        self.status = 0
        self.done: asyncio.Future | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection closed mid-response"))

    def request(self, raw: bytes) -> asyncio.Future:
        self.done = asyncio.get_running_loop().create_future()
        self.head.clear()
        self.remaining = None
        self.transport.write(raw)
        return self.done

    def data_received(self, data: bytes) -> None:
        if self.remaining is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.head[:end]).split(b"\r\n")
            self.status = int(lines[0].split()[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"transfer-encoding":
                    raise RuntimeError("chunked responses are not supported here")
            body = len(self.head) - end - 4
            self.remaining = length - body
            self.counter[0] += body
        else:
            self.remaining -= len(data)
            self.counter[0] += len(data)
        if self.remaining <= 0 and self.done is not None and not self.done.done():
            self.done.set_result(self.status)


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def run(
    base: str,
    paths: list[str],
    connections: int,
    duration: float,
    headers: list[str],
    interval: float | None = None,
    per_path: bool = False,
) -> dict:
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{h}\r\n" for h in headers)
    raws = [
        f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: loadgen\r\n{extra}\r\n".encode()
        for p in paths
    ]
    counter = [0]
    latencies: list[float] = []
    by_path: dict[int, list[float]] = {}
    statuses: dict[int, int] = {}
    errors = 0
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: _Connection(counter), host, port)
        conns.append(conn)
    started = time.perf_counter()
    deadline = started + duration

    async def worker(number: int, conn: _Connection) -> None:
        nonlocal errors
        turn = number
        next_at = started + (interval * number / connections if interval else 0)
        while True:
            if interval:
                now = time.perf_counter()
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                next_at = max(next_at + interval, time.perf_counter())
            if time.perf_counter() >= deadline:
                return
            which = turn % len(raws)
            turn += 1
            sent = time.perf_counter()
            try:
                status = await asyncio.wait_for(
                    conn.request(raws[which]), max(0.001, deadline - sent)
                )
            except asyncio.TimeoutError:
                return  # cut off by the end of the run: the bytes so far are counted
            except ConnectionError:
                errors += 1
                return
            elapsed = time.perf_counter() - sent
            latencies.append(elapsed)
            if per_path:
                by_path.setdefault(which, []).append(elapsed)
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    seconds = time.perf_counter() - started
    received = counter[0]
    for conn in conns:
        conn.transport.close()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.lost for c in conns)), 5)
    latencies.sort()
    result = {
        "connections": connections,
        "interval_ms": interval * 1000 if interval else None,
        "requests": len(latencies),
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "bytes": received,
        "seconds": round(seconds, 3),
        "requests_per_second": round(len(latencies) / seconds, 1),
        "gb_per_second": round(received / seconds / 1e9, 3),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p90_ms": round(_percentile(latencies, 0.90) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round((latencies[-1] if latencies else float("nan")) * 1000, 2),
    }
    if per_path:
        result["p50_ms_by_path"] = {
            paths[i]: round(statistics.median(v) * 1000, 2) for i, v in sorted(by_path.items())
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="http://host:port")
    parser.add_argument("--paths", type=Path, required=True, help="one request path a line")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--interval-ms", type=float, default=0.0)
    parser.add_argument("--per-path", action="store_true")
    args = parser.parse_args()
    paths = [p for p in args.paths.read_text().splitlines() if p.strip()]
    interval = args.interval_ms / 1000 if args.interval_ms > 0 else None
    result = asyncio.run(
        run(args.base, paths, args.connections, args.duration, args.header, interval, args.per_path)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

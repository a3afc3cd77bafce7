"""Every runtime tweak of the server process, with the measurement behind it.

The reading path (views, app, server) names these and nothing more: glibc's malloc arenas and
thresholds (set once at start), the size of one read from a client's socket, large page
bodies written in pieces, and, for benchmark runs only, tracing where memory goes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

# glibc's malloc.
#
# glibc gives each thread that allocates its own arena, up to eight per core. Page parses and
# renders run in worker threads and free megabytes at a time in arenas of their own, and
# memory freed in one arena is not reused by another: measured with a flood of large pages,
# the process peaked 56 MB higher (247 against 191 MB) than with two arenas, for no gain in
# speed.
#
# glibc also raises its mmap threshold each time a large block is freed (up to 32 MiB), so
# after the first page parse, the megabyte buffers of later ones come from the heap instead
# of mmap, and the heap, fragmented by the small objects around them, does not shrink when
# they are freed. Fixed at 64 KiB (which ends the raising) with the trim threshold beside it,
# one cold uv client peaked at 88 MiB instead of 106, and 8 of them at 92-97 instead of 106.

_M_ARENA_MAX = -8  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
ARENAS = 2
THRESHOLD_BYTES = 64 * 1024


def limit_arenas(count: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas, unless MALLOC_ARENA_MAX already says how many; False where
    there is no glibc (macOS, musl), which need nothing."""
    return _mallopt(_M_ARENA_MAX, count, "MALLOC_ARENA_MAX", "arena_max")


def fix_thresholds(size: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap and trim thresholds, unless the environment sets either; False where
    there is no glibc or it refused."""
    env = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    if any(name in os.environ for name in env) or "threshold" in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return False
    return _mallopt(_M_MMAP_THRESHOLD, size) and _mallopt(_M_TRIM_THRESHOLD, size)


def _mallopt(option: int, value: int, env: str = "", tunable: str = "") -> bool:
    if not sys.platform.startswith("linux") or (env and env in os.environ):
        return False
    if tunable and tunable in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(option, value))
    except (OSError, AttributeError):
        return False


# Reads from a client's socket.
#
# asyncio's transports read up to 256 KiB at a time into a new bytes object, shrunk
# afterwards; with glibc's mmap threshold fixed at 64 KiB (above) that is a fresh mapping for
# every read of every request. Requests here are a few hundred bytes: one read may return
# this much. Set once per connection, on its first request (http/app.py's middleware).
SOCKET_READ_BYTES = 16 * 1024


def limit_socket_reads(transport: object) -> None:
    """Make a client connection's transport read at most SOCKET_READ_BYTES at a time."""
    if transport is not None and getattr(transport, "max_size", 0) > SOCKET_READ_BYTES:
        transport.max_size = SOCKET_READ_BYTES  # type: ignore[attr-defined]


# Large page bodies.
#
# Bodies from SENT_APART_BYTES on are written after their headers, piece by piece. aiohttp
# joins a body to its headers into one new bytes object before the write (on Pythons before
# 3.12), and asyncio copies into its buffer whatever the socket does not take at once: for
# every request, one or two fresh copies of every large page, each a new mapping with its
# page faults, and the largest cost of serving warm pages to many connections (a quarter of
# the process's time at 200). Each piece, and at most twice that waiting in the transport,
# stays below the mmap threshold, so the transport's buffer stays in the heap.
SENT_APART_BYTES = 64 * 1024
PIECE_BYTES = 16 * 1024


class SentApart(payload.BytesPayload):
    """A large page body written to the transport in pieces of a view of the held bytes."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self._body = body

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = memoryview(self._body)[:content_length]
        await writer.write(b"")  # the headers, alone
        transport = getattr(writer, "transport", None)
        if transport is not None:
            transport.set_write_buffer_limits(high=2 * PIECE_BYTES)
        for start in range(0, len(view), PIECE_BYTES):
            # aiohttp's StreamWriter takes drain=; the abstract writer does not say so.
            await writer.write(view[start : start + PIECE_BYTES], drain=False)  # type: ignore[call-arg]
            await writer.drain()


# Where the memory goes, for benchmark runs.
#
# With CACHEPROXY_TRACEMALLOC=DIR set, `serve` traces allocations and every few seconds looks
# at what is held; whenever that is more than at any earlier look, the largest holders by
# file:line are written to DIR/peak.txt. Tracing slows allocation down, so this is for
# finding where the bytes go, never for timing.

TRACE_ENV = "CACHEPROXY_TRACEMALLOC"
TRACE_INTERVAL_SECONDS = 2.0
TRACE_TOP = 30


def trace_memory_from_env() -> threading.Event | None:
    """Start the sampler if the environment asks for it; set the event returned to stop it."""
    directory = os.environ.get(TRACE_ENV)
    if not directory:
        return None
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(8)
    stop = threading.Event()
    threading.Thread(target=_sample, args=(out, stop), name="tracemalloc", daemon=True).start()
    return stop


def _sample(out: Path, stop: threading.Event) -> None:
    highest = 0
    while not stop.wait(TRACE_INTERVAL_SECONDS):
        held, peak = tracemalloc.get_traced_memory()
        if held <= highest:
            continue
        highest = held
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        # The peak between two looks too: the moment of the snapshot is not the highest.
        (out / "peak.txt").write_text(
            memory_report(snapshot, held) + f"highest traced {peak / 2**20:.1f} MiB\n"
        )


def memory_report(snapshot: tracemalloc.Snapshot, held: int) -> str:
    """The top holders by line and by the frames above them, in MiB."""
    mib = 1024 * 1024
    lines = [f"{time.strftime('%H:%M:%S')} traced {held / mib:.1f} MiB", "", "by line:"]
    for stat in snapshot.statistics("lineno")[:TRACE_TOP]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size / mib:8.2f} MiB {stat.count:8d} {frame.filename}:{frame.lineno}")
    lines += ["", "by traceback (top 10):"]
    for stat in snapshot.statistics("traceback")[:10]:
        lines.append(f"{stat.size / mib:8.2f} MiB {stat.count:8d}")
        lines += [f"    {f.filename}:{f.lineno}" for f in stat.traceback]
    return "\n".join(lines) + "\n"

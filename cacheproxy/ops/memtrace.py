"""Where the proxy's memory goes, for benchmark runs: with CACHEPROXY_TRACEMALLOC=DIR set,
`serve` traces allocations and every few seconds looks at what is held; whenever that is more
than at any earlier look, the largest holders by file:line are written to DIR/peak.txt.

Tracing slows allocation down, so this is for finding where the bytes go, never for timing.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from pathlib import Path

ENV = "CACHEPROXY_TRACEMALLOC"
INTERVAL_SECONDS = 2.0
TOP = 30


def start_from_env() -> threading.Event | None:
    """Start the sampler if the environment asks for it; set the event returned to stop it."""
    directory = os.environ.get(ENV)
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
    while not stop.wait(INTERVAL_SECONDS):
        held, peak = tracemalloc.get_traced_memory()
        if held <= highest:
            continue
        highest = held
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        # The peak between two looks too: the moment of the snapshot is not the highest.
        (out / "peak.txt").write_text(
            report(snapshot, held) + f"highest traced {peak / 2**20:.1f} MiB\n"
        )


def report(snapshot: tracemalloc.Snapshot, held: int) -> str:
    """The top holders by line and by the frames above them, in MiB."""
    mib = 1024 * 1024
    lines = [f"{time.strftime('%H:%M:%S')} traced {held / mib:.1f} MiB", "", "by line:"]
    for stat in snapshot.statistics("lineno")[:TOP]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size / mib:8.2f} MiB {stat.count:8d} {frame.filename}:{frame.lineno}")
    lines += ["", "by traceback (top 10):"]
    for stat in snapshot.statistics("traceback")[:10]:
        lines.append(f"{stat.size / mib:8.2f} MiB {stat.count:8d}")
        lines += [f"    {f.filename}:{f.lineno}" for f in stat.traceback]
    return "\n".join(lines) + "\n"

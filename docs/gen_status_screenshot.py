"""Renders the status page with a synthetic day of traffic and screenshots it in headless
Chromium: docs/status-page-day.png. Run: .venv/bin/python docs/gen_status_screenshot.py

The day is made up (a working day of CI builds: a cold cache in the morning, warm by noon, a
short upstream outage in the afternoon), fed minute by minute into the same History the proxy
keeps, with a fake clock; the page is the proxy's own renderer.
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cacheproxy.http.status import StatusSnapshot, render_status
from cacheproxy.ops.history import History

HERE = Path(__file__).resolve().parent
DAY_START = 1_767_225_600.0  # a midnight, so the day's shape lines up with the hours
WHEEL = 2_500_000  # a typical wheel, in bytes


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def synthetic_day(history: History, clock: Clock, rng: random.Random) -> None:
    for minute in range(1440):
        clock.now = DAY_START + minute * 60 + 30
        hour = minute / 60
        busy = max(0.0, math.sin(math.pi * (hour - 7) / 12)) if 7 <= hour <= 19 else 0.0
        requests = int(rng.gauss(4 + 120 * busy, 3 + 10 * busy))
        warm = min(0.93, 0.2 + hour / 12)  # the cache fills through the morning
        outage = 15.5 <= hour < 15.75
        for _ in range(max(requests, 0)):
            history.request()
            if rng.random() < 0.45:  # the rest are pages
                hit = outage or rng.random() < warm
                history.file(hit, int(rng.expovariate(1 / WHEEL)))
                if not hit:
                    history.upstream(None if outage else max(0.02, rng.gauss(0.09, 0.03)))
        if outage:
            for _ in range(rng.randint(3, 8)):
                history.upstream(None)
    clock.now = DAY_START + 1439 * 60 + 45


def main() -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("Chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    clock = Clock(DAY_START)
    history = History(clock)
    synthetic_day(history, clock, random.Random(18))
    day = history.series(1440, per_bin=10)
    total = history.series(1440)[0]
    for bucket in history.series(1440)[1:]:
        total.add(bucket)
    snapshot = StatusSnapshot(
        index_url="http://proxy.internal:3145/simple/",
        upstream="https://index.internal/simple/",
        cache_bytes=14_200_000_000,
        cache_limit=20 * 1024**3,
        cache_entries=18_431,
        file_hits=total.file_hits,
        file_misses=total.file_misses,
        bytes_from_cache=total.bytes_from_cache,
        bytes_from_upstream=total.bytes_from_upstream,
        top_projects=[("numpy", 2210), ("pandas", 1893), ("requests", 1650), ("boto3", 1210)],
        recent_errors=[(DAY_START + 15.6 * 3600, "cannot connect to upstream index.internal:443")],
        upstream_healthy=True,
        started_at=DAY_START - 3 * 86400,
        hour=history.series(60),
        day=day,
    )
    with tempfile.TemporaryDirectory() as work:
        page = Path(work) / "status.html"
        page.write_text(render_status(snapshot, now=clock.now))
        target = HERE / "status-page-day.png"
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   f"--user-data-dir={work}/profile", f"--screenshot={target}",
                   "--window-size=1000,1600", page.as_uri()]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

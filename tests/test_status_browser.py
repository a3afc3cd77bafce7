"""The status page in a real headless Chromium: it renders, and its numbers are /metrics'."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp import ClientSession

from cacheproxy.config import NamedIndex
from cacheproxy.http.status import ASSUMED_LINK_BITS_PER_SECOND
from tests.fakes.upstream import UpstreamIndex, make_app
from tests.fakes.wheels import build_wheel

WIDTH, HEIGHT = 1100, 1000


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        # .ci/run installs it from Debian; where the package archive is out of reach this
        # says so instead of failing every other check with it.
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return found


def browse(*args: str) -> subprocess.CompletedProcess:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += ["--no-first-run", "--user-data-dir=" + os.environ.get("TMPDIR", "/tmp") + "/cpb"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


class Elements(HTMLParser):
    """Text and attributes of every element with an id, as the browser left the DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, dict] = {}
        self._open: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "id" in attributes:
            self.by_id[attributes["id"]] = {**attributes, "text": ""}
            self._open.append(attributes["id"])
        elif self._open:
            self._open.append("")

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        for element_id in self._open:
            if element_id:
                self.by_id[element_id]["text"] += data


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def png_pixels(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """Width, height and rows of RGB pixels of an 8-bit RGB(A) PNG (Chromium's screenshots)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    width, height, depth, colour, *_ = header
    assert depth == 8 and colour in (2, 6)
    channels = 3 if colour == 2 else 4
    raw, stride, rows = zlib.decompress(idat), width * channels, []
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + best) & 255
        rows.append([tuple(line[x : x + 3]) for x in range(0, stride, channels)])
        previous = bytes(line)
    return width, height, rows


async def exercise(base: str, session: ClientSession, upstream) -> None:
    """Traffic like an install or two: pages, cold files, then the same files warm."""
    for filename in ("tinyalpha-2.0-py3-none-any.whl", "beta_helper-1.0-py3-none-any.whl"):
        project = "tinyalpha" if filename.startswith("tiny") else "beta-helper"
        for _ in range(2):
            async with session.get(f"{base}simple/{project}/") as resp:
                await resp.read()
            async with session.get(f"{base}simple/{project}/{filename}") as resp:
                assert resp.status == 200
                await resp.read()
    async with session.get(f"{base}simple/bigpkg/bigpkg-1.0-py3-none-any.whl") as resp:
        await resp.read()
    # One upstream error for the page's error list.
    upstream.index.page_status = 500
    async with session.get(f"{base}simple/no-such-thing/") as resp:
        assert resp.status == 502
    upstream.index.page_status = None


async def test_status_page_in_chromium_matches_metrics(
    make_proxy, upstream, aiohttp_server, tmp_path
):
    vendor = UpstreamIndex()
    vendor.add_wheel(build_wheel(tmp_path / "vendor", "vendorpkg", "1.0"))
    vendor_server = await aiohttp_server(make_app(vendor))
    vendor_index = NamedIndex(name="vendor", upstream=str(vendor_server.make_url("/simple/")))
    proxy = await make_proxy(retries=0, indexes=(vendor_index,))
    base = proxy.url.removesuffix("simple/")
    async with ClientSession() as session:
        await exercise(base, session, upstream)
        dom = await asyncio.to_thread(browse, "--dump-dom", base)
        async with session.get(base + "metrics") as resp:
            metrics = await resp.text()
    assert dom.returncode == 0, dom.stderr
    page = Elements()
    page.feed(dom.stdout)
    shown = page.by_id

    hits = sum(
        metric(metrics, "cacheproxy_cache_outcomes_total", kind="file", outcome=o)
        for o in ("hit", "stale", "revalidated")
    )
    files = metric(metrics, "cacheproxy_cache_outcomes_total", kind="file")
    assert int(shown["file-hits"]["text"]) == hits == 2
    assert int(shown["file-misses"]["text"]) == files - hits == 3
    assert shown["hit-ratio"]["text"] == f"{hits / files:.1%}"
    cache_bytes = metric(metrics, "cacheproxy_cache_bytes")
    assert int(shown["cache-size"]["data-bytes"]) == cache_bytes > 8 * 1024 * 1024
    assert int(shown["cache-limit"]["data-bytes"]) == metric(
        metrics, "cacheproxy_cache_limit_bytes"
    )
    assert int(shown["cache-entries"]["text"]) == metric(metrics, "cacheproxy_cache_entries")
    from_cache = metric(metrics, "cacheproxy_file_bytes_served_total", source="cache")
    assert int(shown["bytes-saved"]["data-bytes"]) == from_cache > 0
    from_upstream = metric(metrics, "cacheproxy_file_bytes_served_total", source="upstream")
    assert int(shown["bytes-upstream"]["data-bytes"]) == from_upstream
    # The headline: the same bytes, and the time they would take at the assumed link speed.
    assert shown["saved-bytes"]["text"] == shown["bytes-saved"]["text"]
    seconds = from_cache * 8 / ASSUMED_LINK_BITS_PER_SECOND
    assert float(shown["time-saved"]["data-seconds"]) == round(seconds, 1)
    # The charts were drawn and the last hour's requests add up to those the index answered.
    assert dom.stdout.count("<svg") == 10
    # The last hour's "from cache" bars add up to the bytes /metrics counted from the cache.
    hour = dom.stdout.split('id="charts-hour"', 1)[1].split('id="charts-day"', 1)[0]
    cached_bars = re.findall(r'<rect[^>]*fill="#2e9d5b"[^>]*data-value="([0-9.e+]+)"', hour)
    assert sum(float(value) for value in cached_bars) == from_cache
    assert shown["index-url"]["text"] == proxy.url
    assert "upstream answered 500" in shown["recent-errors"]["text"]
    assert "tinyalpha" in shown["top-projects"]["text"]
    assert f"{base}index/vendor/simple/" in shown["named-indexes"]["text"]

    # What a person sees: a real rendering, not a blank or an error page.
    screenshot = tmp_path / "status.png"
    shot = await asyncio.to_thread(
        browse, f"--screenshot={screenshot}", f"--window-size={WIDTH},{HEIGHT}", base
    )
    assert shot.returncode == 0, shot.stderr
    width, height, rows = png_pixels(screenshot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    dark = sum(1 for row in rows for pixel in row if sum(pixel) < 3 * 128)  # text
    colours = {pixel for row in rows for pixel in row}
    assert dark > 2000 and len(colours) > 20
    if os.environ.get("CACHEPROXY_SAVE_SCREENSHOT"):
        target = Path(os.environ["CACHEPROXY_SAVE_SCREENSHOT"])
        await asyncio.to_thread(shutil.copyfile, screenshot, target)

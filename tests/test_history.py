"""The minute ring behind the status page's charts, and the SVG drawn from it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from cacheproxy.http.charts import HEIGHT, Series, bar_chart, line_chart, traffic_charts
from cacheproxy.http.status import human_bytes
from cacheproxy.ops.history import History
from tests.fakes.clock import FakeClock

SVG = "{http://www.w3.org/2000/svg}"


def test_a_minute_goes_to_its_own_bucket():
    clock = FakeClock(600_000.0)  # on a minute boundary
    history = History(clock)
    history.request()
    history.file(hit=True, sent=100)
    clock.now += 59
    history.request()
    clock.now += 1
    history.file(hit=False, sent=40)
    history.upstream(0.5)
    history.upstream(None)
    last = history.series(2)
    assert [b.requests for b in last] == [2, 0]
    assert (last[0].file_hits, last[0].bytes_from_cache) == (1, 100)
    assert (last[1].file_misses, last[1].bytes_from_upstream) == (1, 40)
    assert (last[1].upstream_requests, last[1].upstream_errors) == (2, 1)
    assert last[1].upstream_latency == 0.5 and last[0].upstream_latency is None
    assert last[0].hit_ratio == 1.0 and last[1].hit_ratio == 0.0


def test_a_bucket_a_day_old_is_reused_empty():
    clock = FakeClock(600_000.0)
    history = History(clock, minutes=1440)
    history.request()
    clock.now += 1440 * 60  # the same slot, a day later
    assert sum(b.requests for b in history.series(1440)) == 0
    history.request()
    assert [b.requests for b in history.series(1)] == [1]


def test_minutes_not_recorded_read_as_empty_and_bins_sum():
    clock = FakeClock(600_000.0)
    history = History(clock)
    for _ in range(30):
        history.request()
        clock.now += 60
    # Now 30 minutes later, nothing recorded this minute.
    hour = history.series(60, per_bin=10)
    assert len(hour) == 6
    assert [b.requests for b in hour] == [0, 0, 1, 10, 10, 9]
    assert hour[-1].minute == int(clock.now // 60) - 9


def test_bars_are_well_formed_and_scaled_to_the_tallest():
    svg = bar_chart("Requests", [Series("n", [10, 5, 0, None], "#000")], "1 h", str)
    root = ET.fromstring(svg)
    bars = root.findall(f"{SVG}rect")
    heights = [float(bar.get("height")) for bar in bars]
    assert len(bars) == 2 and heights[0] == 2 * heights[1]
    plot = heights[0]
    assert float(bars[0].get("y")) + plot == HEIGHT - 16
    assert [bar.get("data-value") for bar in bars] == ["10", "5"]


def test_stacked_bars_add_up():
    series = [Series("a", [3, 1], "#0f0"), Series("b", [1, 0], "#999")]
    root = ET.fromstring(bar_chart("Bytes", series, "1 h", str))
    a0, a1, b0 = (float(r.get("height")) for r in root.findall(f"{SVG}rect"))
    assert abs(a0 + b0 - 4 * a1) < 0.05  # the first stack is the tallest: 4 to the second's 1


def test_a_line_breaks_where_there_is_no_value_and_names_are_escaped():
    svg = line_chart(
        "Hit <ratio>", Series("a&b", [0.5, 1.0, None, 0.0, 0.25], "#0a0"), "x", str, 1.0
    )
    root = ET.fromstring(svg)
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 2
    first = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    # 1.0 is the top of the plot, 0.5 halfway down it.
    assert first[1][1] == 18 and abs(first[0][1] - (18 + (HEIGHT - 34) / 2)) < 0.01
    assert root.find(f"{SVG}title").text == "Hit <ratio>"


def test_every_chart_of_a_window_is_well_formed_even_empty():
    history = History(FakeClock())
    markup = traffic_charts(history.series(60), "60 min ago", human_bytes)
    root = ET.fromstring(f'<div xmlns:svg="http://www.w3.org/2000/svg">{markup}</div>')
    assert len(root.findall(f"{SVG}svg")) == 5

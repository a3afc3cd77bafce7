"""Small SVG charts drawn on the server from the traffic history: no script, no framework.

Pure functions of numbers to markup. Each chart is bars (one per bin, stacked when there are
several series) or a line (with gaps where a bin has no value), scaled to its own maximum,
labelled with what the top of the plot stands for and the span it covers.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cacheproxy.ops.history import Bucket

WIDTH, HEIGHT = 360, 120
_TOP, _BOTTOM, _LEFT = 18, 16, 4  # room for the title and the time axis labels


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[float | None]  # None: nothing to show for that bin
    colour: str


def _scale(maximum: float) -> float:
    return maximum if maximum > 0 else 1.0


def _frame(title: str, legend: Sequence[Series], span: str, top: str, body: str) -> str:
    e = html.escape
    keys, x = [], WIDTH - 4
    for series in reversed(legend):
        label = e(series.label)
        keys.append(f'<text x="{x}" y="11" text-anchor="end" fill="{series.colour}">{label}</text>')
        x -= 7 * len(series.label) + 12
    bottom = HEIGHT - _BOTTOM
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{e(title)}" '
        'font-family="system-ui, sans-serif" font-size="10">'
        f"<title>{e(title)}</title>"
        f'<text x="{_LEFT}" y="11" fill="#5b6472"><tspan font-weight="600" fill="#1d2430">'
        f"{e(title)}</tspan> · top {e(top)}</text>"
        + "".join(keys)
        + f'<line x1="{_LEFT}" y1="{bottom}" x2="{WIDTH}" y2="{bottom}" stroke="#d8dde5"/>'
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{WIDTH}" y2="{_TOP}" stroke="#eef1f5"/>'
        f'<text x="{_LEFT}" y="{HEIGHT - 3}" fill="#5b6472">{e(span)}</text>'
        f'<text x="{WIDTH - 2}" y="{HEIGHT - 3}" text-anchor="end" fill="#5b6472">now</text>'
        f"{body}</svg>"
    )


def bar_chart(
    title: str, stacked: Sequence[Series], span: str, label: Callable[[float], str]
) -> str:
    """One bar per bin, the series stacked bottom to top; scaled to the tallest stack."""
    count = max((len(s.values) for s in stacked), default=0)
    totals = [sum(s.values[i] or 0 for s in stacked) for i in range(count)]
    maximum = _scale(max(totals, default=0))
    plot = HEIGHT - _TOP - _BOTTOM
    step = (WIDTH - _LEFT) / max(count, 1)
    width = max(step - 0.6, 0.4)  # a hairline apart
    bars = []
    for i in range(count):
        base = float(HEIGHT - _BOTTOM)
        for series in stacked:
            value = series.values[i] or 0
            if value <= 0:
                continue
            height = plot * value / maximum
            base -= height
            bars.append(
                f'<rect x="{_LEFT + i * step:.2f}" y="{base:.2f}" width="{width:.2f}"'
                f' height="{height:.2f}" fill="{series.colour}" data-value="{value!r}"/>'
            )
    return _frame(title, stacked, span, label(max(totals, default=0)), "".join(bars))


def line_chart(
    title: str,
    series: Series,
    span: str,
    label: Callable[[float], str],
    ceiling: float | None = None,
) -> str:
    """A line through the bins that have a value, broken where one has none; scaled to
    ceiling (a ratio's 1.0, say) or else to the largest value."""
    values = series.values
    present = [v for v in values if v is not None]
    maximum = _scale(ceiling if ceiling is not None else max(present, default=0))
    plot = HEIGHT - _TOP - _BOTTOM
    step = (WIDTH - _LEFT) / max(len(values), 1)
    runs: list[list[str]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            runs.append([])
            continue
        x = _LEFT + (i + 0.5) * step
        y = HEIGHT - _BOTTOM - plot * min(value, maximum) / maximum
        runs[-1].append(f"{x:.2f},{y:.2f}")
    lines = "".join(
        f'<polyline points="{" ".join(run)}" fill="none" stroke="{series.colour}" '
        'stroke-width="1.5" stroke-linejoin="round"/>'
        if len(run) > 1
        else f'<circle cx="{run[0].split(",")[0]}" cy="{run[0].split(",")[1]}" r="1.5" '
        f'fill="{series.colour}"/>'
        for run in runs
        if run
    )
    return _frame(title, [series], span, label(maximum if present else 0), lines)


def traffic_charts(bins: Sequence[Bucket], span: str, human_bytes: Callable[[float], str]) -> str:
    """The charts of one window: requests, file hit ratio, bytes by source, the upstream's
    latency and errors."""

    def count(value: float) -> str:
        return f"{value:.0f}"

    def bars(title: str, label: str, values: list[float], colour: str) -> str:
        return bar_chart(title, [Series(label, values, colour)], span, count)

    blue, green, grey, red = "#3b7ddd", "#2e9d5b", "#9aa3b0", "#b3261e"
    by_source = [
        Series("from cache", [b.bytes_from_cache for b in bins], green),
        Series("from upstream", [b.bytes_from_upstream for b in bins], grey),
    ]
    hit_ratio = Series("hits", [b.hit_ratio for b in bins], green)
    latency = Series("mean", [b.upstream_latency for b in bins], blue)
    return "".join(
        [
            bars("Requests", "requests", [b.requests for b in bins], blue),
            line_chart("File hit ratio", hit_ratio, span, lambda v: f"{v:.0%}", ceiling=1.0),
            bar_chart("File bytes served", by_source, span, human_bytes),
            line_chart("Upstream latency", latency, span, lambda v: f"{v * 1000:.0f} ms"),
            bars("Upstream errors", "errors", [b.upstream_errors for b in bins], red),
        ]
    )

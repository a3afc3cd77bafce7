"""The status page at /: what a person running the proxy wants to see at a glance."""

from __future__ import annotations

import dataclasses
import html
import time
from dataclasses import dataclass
from importlib.resources import files
from string import Template

from cacheproxy.http.charts import traffic_charts
from cacheproxy.ops.history import Bucket

# What "download time saved" assumes the link to the upstream carries: an estimate, said so
# on the page. 50 Mbit/s is a typical office or CI runner share, not a measurement.
ASSUMED_LINK_BITS_PER_SECOND = 50_000_000

_TEMPLATE = Template(files("cacheproxy.http").joinpath("templates/status.html").read_text())


@dataclass(frozen=True)
class StatusSnapshot:
    index_url: str
    upstream: str
    cache_bytes: int
    cache_limit: int
    cache_entries: int
    file_hits: int
    file_misses: int
    bytes_from_cache: int
    bytes_from_upstream: int
    top_projects: list[tuple[str, int]]
    recent_errors: list[tuple[float, str]]
    upstream_healthy: bool
    started_at: float
    links: dict[str, str]  # the proxy's own pages by route name: metrics, simple, health
    named_indexes: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    disk_full: bool = False
    memory_held: dict[str, int] = dataclasses.field(default_factory=dict)  # cache -> bytes
    memory_budget: int = 0  # per index
    hour: list[Bucket] = dataclasses.field(default_factory=list)  # a bin per minute
    day: list[Bucket] = dataclasses.field(default_factory=list)  # a bin per 10 minutes
    rules: list[str] = dataclasses.field(default_factory=list)  # install rules in force
    shared_cache: str = ""  # "", "ok" or "shared cache degraded: REASON"
    # CONNECTs by outcome (http/connect.py); None: the transparent face is off.
    connects: dict[str, int] | None = None

    @property
    def hit_ratio(self) -> float | None:
        total = self.file_hits + self.file_misses
        return self.file_hits / total if total else None


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def time_saved(bytes_from_cache: int) -> float:
    """Seconds the cached bytes would have taken over the assumed link."""
    return bytes_from_cache * 8 / ASSUMED_LINK_BITS_PER_SECOND


def _connects_card(connects: dict[str, int] | None) -> str:
    """The transparent face's CONNECTs: intercepted, tunnelled, and refused (any refusal:
    a host or port not allowed, a malformed CONNECT, missing proxy credentials)."""
    if connects is None:
        return (
            '<div class="card">Transparent face<b id="connects-off">off</b>--no-transparent</div>'
        )
    refused = sum(connects.get(o, 0) for o in ("refused", "bad", "unauthorized"))
    return (
        '<div class="card">CONNECTs intercepted'
        f'<b><span id="connects-intercepted">{connects.get("intercepted", 0)}</span></b>'
        f'<span id="connects-tunnelled">{connects.get("tunnelled", 0)}</span> tunnelled, '
        f'<span id="connects-refused">{refused}</span> refused</div>'
    )


def render_status(s: StatusSnapshot, now: float | None = None) -> str:
    now = time.time() if now is None else now
    e = html.escape
    ratio = "no files served yet" if s.hit_ratio is None else f"{s.hit_ratio:.1%}"
    used = s.cache_bytes / s.cache_limit if s.cache_limit else 0
    projects = "".join(
        f"<tr><td>{e(name)}</td><td class=n>{count}</td></tr>" for name, count in s.top_projects
    )
    errors = "".join(
        f"<li><time>{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))}</time> {e(m)}</li>"
        for at, m in s.recent_errors
    )
    healthy = "reachable" if s.upstream_healthy else "unreachable: serving from cache"
    named = "".join(
        f"<tr><td>{e(name)}</td><td><code>{e(url)}</code></td><td>{e(upstream)}</td></tr>"
        for name, url, upstream in s.named_indexes
    )
    if named:
        named = f'<h2>Named indexes</h2><table id="named-indexes">{named}</table>\n'

    disk = (
        '<p id="disk-full" class="bad">Disk full: pages and files are served without being'
        " cached until there is room again.</p>\n"
        if s.disk_full
        else ""
    )

    rules = (
        "".join(f"<li>{e(line)}</li>" for line in s.rules) or "<li>none: every file is served</li>"
    )
    shared = ""
    if s.shared_cache.startswith("shared cache degraded"):
        shared = f'<p id="shared-cache" class="bad">{e(s.shared_cache)}</p>\n'
    memory = ", ".join(
        f'{e(cache)} <span id="memory-{e(cache)}" data-bytes="{held}">{human_bytes(held)}</span>'
        for cache, held in sorted(s.memory_held.items())
    )
    return _TEMPLATE.substitute(
        connects=_connects_card(s.connects),
        disk_full=disk,
        memory_total=human_bytes(sum(s.memory_held.values())),
        memory_caches=memory or "none",
        memory_budget=human_bytes(s.memory_budget),
        shared_cache=shared,
        time_saved=human_duration(time_saved(s.bytes_from_cache)),
        time_saved_seconds=f"{time_saved(s.bytes_from_cache):.1f}",
        link_speed=f"{ASSUMED_LINK_BITS_PER_SECOND / 1e6:g} Mbit/s",
        hour_charts=traffic_charts(s.hour, "60 min ago", human_bytes) if s.hour else "",
        day_charts=traffic_charts(s.day, "24 h ago", human_bytes) if s.day else "",
        rules=f'<h2>Install rules</h2><ul id="install-rules">{rules}</ul>\n',
        index_url=e(s.index_url),
        metrics_url=e(s.links["metrics"]),
        simple_url=e(s.links["simple"]),
        health_url=e(s.links["health"]),
        upstream=e(s.upstream),
        cache_size=human_bytes(s.cache_bytes),
        cache_bytes=s.cache_bytes,
        cache_limit=human_bytes(s.cache_limit),
        cache_limit_bytes=s.cache_limit,
        cache_entries=s.cache_entries,
        used_percent=f"{min(used, 1):.1%}",
        hit_ratio=ratio,
        file_hits=s.file_hits,
        file_misses=s.file_misses,
        bytes_from_cache=human_bytes(s.bytes_from_cache),
        bytes_from_upstream=human_bytes(s.bytes_from_upstream),
        bytes_from_cache_exact=s.bytes_from_cache,
        bytes_from_upstream_exact=s.bytes_from_upstream,
        named_indexes=named,
        health=healthy,
        health_class="" if s.upstream_healthy else "bad",
        projects=projects or "<tr><td colspan=2>none yet</td></tr>",
        errors=errors or "<li>none</li>",
        uptime=int(now - s.started_at),
    )

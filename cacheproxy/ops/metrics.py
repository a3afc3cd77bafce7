"""Prometheus metrics, in a registry of the app's own (no process-global state)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401 - re-exported
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cacheproxy.ops.history import History
from cacheproxy.ops.redact import redact_url

# Outcomes whose bytes came from the disk, not the upstream.
CACHE_HITS = frozenset({"hit", "stale", "revalidated"})
# What became of a CONNECT (http/connect.py).
CONNECT_OUTCOMES = ("intercepted", "tunnelled", "refused", "bad", "unauthorized")
# SharedCounters fields exported as cacheproxy_shared_<name>_total.
_SHARED_COUNTERS = {
    "hits": "Shared-tier reads that found the object",
    "misses": "Shared-tier reads that did not (absent or unavailable)",
    "bytes_read": "Bytes read from the shared tier",
    "bytes_written": "Bytes written to the shared tier",
    "uploads": "Objects written to the shared tier (files and pages)",
    "skipped": "Shared-tier calls skipped because its circuit breaker was open",
    "corrupt": "Shared files whose bytes did not match their sha256 (never served)",
    "dropped_uploads": "Uploads not queued: backlog full or tier degraded",
}


@dataclass
class UpstreamError:
    at: float
    message: str


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    recent_errors: collections.deque = field(default_factory=lambda: collections.deque(maxlen=10))
    project_hits: collections.Counter = field(default_factory=collections.Counter)
    _in_flight_sources: list[Callable[[], int]] = field(default_factory=list)
    _memory_sources: dict[str, list[Callable[[], int]]] = field(default_factory=dict)
    # The last day minute by minute, for the status page's charts.
    history: History = field(default_factory=History)
    _shared_tiers: list = field(default_factory=list)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "cacheproxy_requests", "Requests answered", ["route", "status"], registry=r
        )
        self.outcomes = Counter(
            "cacheproxy_cache_outcomes",
            "How the cache answered: hit, miss, coalesced, stale, revalidated, uncached, ...",
            ["kind", "outcome"],
            registry=r,
        )
        self.bytes_served = Counter(
            "cacheproxy_file_bytes_served",
            "File bytes sent to clients, by where they came from",
            ["source"],
            registry=r,
        )
        self.upstream_requests = Counter(
            "cacheproxy_upstream_requests",
            "Requests to the upstream",
            ["kind", "result"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "cacheproxy_upstream_seconds",
            "Time to the upstream's response headers",
            ["kind"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.downloads_in_flight = Gauge(
            "cacheproxy_downloads_in_flight", "Upstream file downloads running", registry=r
        )
        self.cache_bytes = Gauge("cacheproxy_cache_bytes", "Size of the cache on disk", registry=r)
        self.cache_entries = Gauge(
            "cacheproxy_cache_entries", "Entries in the cache (files and pages)", registry=r
        )
        self.cache_limit = Gauge(
            "cacheproxy_cache_limit_bytes", "The cache's size limit", registry=r
        )
        self.cache_files = Gauge(
            "cacheproxy_cache_files", "Files in the cache (wheels, sdists, metadata)", registry=r
        )
        self.evictions = Counter(
            "cacheproxy_evictions",
            "Entries evicted to stay under the size limit since start",
            registry=r,
        )
        self._evictions_seen = 0
        self.memory_cache_bytes = Gauge(
            "cacheproxy_memory_cache_bytes",
            "Bytes held by the in-memory page caches (parsed, rendered), within --memory-budget",
            ["cache"],
            registry=r,
        )
        self.page_entries_dropped = Counter(
            "cacheproxy_page_entries_dropped",
            "File entries left out of upstream pages as unusable (bad name or URL, duplicate, "
            "file host not allowed)",
            registry=r,
        )

        self.policy_hidden = Counter(
            "cacheproxy_policy_hidden",
            "What the install rules held back, by rule: files left off each rendered page "
            "(kind=page), file requests refused (kind=file), projects refused (kind=project)",
            ["rule", "kind"],
            registry=r,
        )
        self.lookahead_fetches = Counter(
            "cacheproxy_lookahead_fetches",
            "Pages and wheel metadata fetched ahead of clients by the resolution lookahead",
            ["kind"],
            registry=r,
        )

        self.connects = Counter(
            "cacheproxy_connects",
            "CONNECT requests by what became of them: intercepted (a package host, answered "
            "from the cache), tunnelled (a --tunnel host), refused (any other host or port, or "
            "the face off), bad (unreadable), unauthorized (no valid Proxy-Authorization)",
            ["outcome"],
            registry=r,
        )
        for outcome in CONNECT_OUTCOMES:
            self.connects.labels(outcome)  # every outcome shown, at 0 until it happens

    def record_evictions(self, total: int) -> None:
        """The stores count evictions; the counter follows their running total."""
        if total > self._evictions_seen:
            self.evictions.inc(total - self._evictions_seen)
            self._evictions_seen = total

    def track_in_flight(self, count: Callable[[], int]) -> None:
        """Add a source of in-flight downloads (one per index); the gauge shows their sum."""
        self._in_flight_sources.append(count)
        sources = self._in_flight_sources
        self.downloads_in_flight.set_function(lambda: sum(source() for source in sources))

    def track_memory(self, cache: str, held: Callable[[], int]) -> None:
        """Add a source of a memory cache's bytes (one per index); the gauge shows their sum."""
        sources = self._memory_sources.setdefault(cache, [])
        sources.append(held)
        self.memory_cache_bytes.labels(cache=cache).set_function(lambda: sum(s() for s in sources))

    def memory_held(self) -> dict[str, int]:
        """cache -> bytes held, over every index, for the status page."""
        return {cache: sum(s() for s in sources) for cache, sources in self._memory_sources.items()}

    def track_shared(self, tier) -> None:
        """Export a shared tier's counters at every scrape (one collector for all tiers)."""
        if not self._shared_tiers:
            self.registry.register(_SharedCollector(self._shared_tiers))
        self._shared_tiers.append(tier)

    def upstream_failed(self, message: str) -> None:
        # Shown on the status page: no URL in it may carry its credentials.
        self.recent_errors.appendleft(UpstreamError(time.time(), redact_url(message)))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def total(self, counter: Counter, **labels: str) -> float:
        """Sum of a counter over the samples whose labels match, for the status page."""
        value = 0.0
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    value += sample.value
        return value


class _SharedCollector:
    """Reads the shared tiers' own counters when scraped, labelled by bucket URL (no keys)."""

    def __init__(self, tiers: list) -> None:
        self._tiers = tiers

    def collect(self):
        label = ["shared_cache"]
        families = {
            name: CounterMetricFamily(f"cacheproxy_shared_{name}", text, labels=label)
            for name, text in _SHARED_COUNTERS.items()
        }
        errors = CounterMetricFamily(
            "cacheproxy_shared_errors", "Shared-tier failures by kind", labels=[*label, "kind"]
        )
        backlog = GaugeMetricFamily(
            "cacheproxy_shared_upload_backlog", "Uploads queued or running", labels=label
        )
        degraded = GaugeMetricFamily(
            "cacheproxy_shared_degraded", "1 while the shared tier is skipped", labels=label
        )
        for tier in self._tiers:
            where = [tier.settings.url]
            for name, family in families.items():
                family.add_metric(where, getattr(tier.counters, name))
            for kind, count in sorted(tier.counters.errors.items()):
                errors.add_metric([*where, kind], count)
            backlog.add_metric(where, tier.backlog)
            degraded.add_metric(where, int(tier.degraded))
        yield from families.values()
        yield from (errors, backlog, degraded)

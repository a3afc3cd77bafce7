"""Caching policy as pure functions of a stored entry, the clock and the settings.

Nothing here does I/O, so every rule can be tested without a network or a disk.
"""

from __future__ import annotations

import enum

from cacheproxy.errors import UpstreamError, UpstreamRefused
from cacheproxy.storage.records import CachedPage


class PageAction(enum.Enum):
    SERVE = "serve"  # fresh enough: answer from the cache
    REVALIDATE = "revalidate"  # stored but stale: ask the upstream if it changed
    FETCH = "fetch"  # nothing stored: fetch it
    MISSING = "missing"  # offline and nothing stored


def is_fresh(entry: CachedPage, now: float, page_ttl: float, negative_ttl: float) -> bool:
    ttl = page_ttl if entry.status == 200 else negative_ttl
    return 0 <= now - entry.fetched_at < ttl


def page_action(
    entry: CachedPage | None,
    now: float,
    *,
    page_ttl: float,
    negative_ttl: float,
    offline: bool,
) -> PageAction:
    if entry is None:
        return PageAction.MISSING if offline else PageAction.FETCH
    if offline or is_fresh(entry, now, page_ttl, negative_ttl):
        return PageAction.SERVE
    return PageAction.REVALIDATE


def revalidation_headers(entry: CachedPage | None) -> dict[str, str]:
    """Conditional request headers that let the upstream answer 304."""
    if entry is None or entry.status != 200:
        return {}
    headers = {}
    if entry.etag:
        headers["If-None-Match"] = entry.etag
    if entry.last_modified:
        headers["If-Modified-Since"] = entry.last_modified
    return headers


def may_serve_stale(entry: CachedPage | None) -> bool:
    """When the upstream fails, a page we once had beats an error (stale-if-error)."""
    return entry is not None and entry.status == 200


# After the upstream could not be reached, stale pages are served without asking it again for
# this long, so an outage costs installs no connection attempts, retries or backoff per page.
UPSTREAM_REST_SECONDS = 10.0


def upstream_resting(unreachable_at: float | None, now: float) -> bool:
    return unreachable_at is not None and 0 <= now - unreachable_at < UPSTREAM_REST_SECONDS


def check_page_status(status: int, what: str) -> None:
    """Raise for an upstream answer that is neither a page nor 'no such project': 401/403 are
    passed on to the client (UpstreamRefused), anything else is a failure (UpstreamError)."""
    if status in (401, 403):
        raise UpstreamRefused(status)
    if not is_cacheable_page_status(status):
        raise UpstreamError(f"upstream answered {status} for {what}")


def is_cacheable_page_status(status: int) -> bool:
    """200 and 'no such project' are stored; auth failures and server errors never are."""
    return status in (200, 404, 410)


def page_max_age(entry: CachedPage, now: float, page_ttl: float, negative_ttl: float) -> int:
    """How long a client may reuse the page: what is left of our own freshness."""
    ttl = page_ttl if entry.status == 200 else negative_ttl
    return max(0, int(ttl - (now - entry.fetched_at)))

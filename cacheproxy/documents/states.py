"""The cached-document spec: the pure freshness decisions, the states a cached document goes
through on its way to a client, and the pure transitions between them.

Project pages and JSON API documents are cached alike: an entry with a status, when it was last
confirmed and the upstream's validators (`storage.records`). Each state is a value; each
transition is a method that takes what the driver (`documents.driver`) learned by doing I/O and
returns the next state. The decisions the states are built on (is an entry fresh, which
validators to send, which statuses are stored, how long the upstream rests after an outage) are
plain functions of an entry, the clock and the settings, at the top. Nothing here does I/O, so
every rule and every path is testable without a network or a disk.

    decide(entry) ─┬─ Serve (fresh, or offline with something stored)          terminal
                   ├─ Missing (offline, nothing stored)                         terminal
                   ├─ NeedsFetch ── peer ──┬─ Store (a fresh copy from a peer)
                   │                       ├─ NeedsRevalidation (a peer's stale copy)
                   │                       └─ NeedsFetch (asked the peer already)
                   └─ NeedsRevalidation

    NeedsFetch / NeedsRevalidation ─┬─ rested: Serve stale (the upstream rests after an outage)
                                    ├─ 304: Store (the stored entry confirmed)
                                    ├─ 200: NeedsParse ── Store (the new entry)
                                    ├─ 404/410: Store (a negative entry, its own TTL)
                                    └─ failed: Serve stale (stale-if-error), or the error raised
                                       (401/403 always raised, never stored)

    Store ── stored or not ── Serve (outcome as decided, "uncached" if the store could not)
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cacheproxy.errors import UpstreamError, UpstreamRefused
from cacheproxy.storage.records import CachedPage

# The freshness decisions -------------------------------------------------------------------


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


# The states --------------------------------------------------------------------------------


class Answer(Protocol):
    """What the states read of an upstream answer (upstream.PageResponse)."""

    @property
    def status(self) -> int: ...
    @property
    def etag(self) -> str | None: ...
    @property
    def last_modified(self) -> str | None: ...


# A stored entry made from (status, body, fetched_at, etag, last_modified): CachedPage or
# CachedDocument, whose fields come in that order.
MakeEntry = Callable[[int, Any, float, "str | None", "str | None"], Any]


@dataclass(frozen=True)
class Freshness:
    """The settings the freshness decision reads."""

    page_ttl: float
    negative_ttl: float
    offline: bool

    @classmethod
    def of(cls, config: Any) -> Freshness:
        return cls(config.page_ttl, config.negative_ttl, config.offline)

    def max_age(self, entry: Any, now: float) -> int:
        return page_max_age(entry, now, self.page_ttl, self.negative_ttl)


# Terminal states ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Serve:
    """Answer with this entry. outcome: hit, miss, revalidated, stale, uncached or shared."""

    entry: Any
    outcome: str = "hit"
    warning: str | None = None
    # What the kind of document made on the way (a page's first render), or None.
    extra: Any = None


@dataclass(frozen=True)
class Missing:
    """Offline, and nothing stored: nothing to answer with."""


# States that ask for I/O -------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """Keep this entry; the driver reports whether the store took it."""

    entry: Any
    outcome: str  # what it is served as once stored: miss, revalidated or shared
    previous: Any = None  # the entry it replaces, if any
    extra: Any = None  # made by the parse, finished beside the store
    from_upstream: bool = True  # False for a peer's copy: nothing new to tell anyone

    def stored(self, ok: bool, extra: Any = None) -> Serve:
        # A store that cannot take it (a full disk) does not fail the request: served uncached.
        return Serve(self.entry, self.outcome if ok else "uncached", extra=extra)


def _stale(previous: Any, warning: str) -> Serve:
    return Serve(previous, "stale", warning=warning)


@dataclass(frozen=True)
class _AskUpstream:
    previous: Any  # the stored entry (None when nothing is)

    @property
    def headers(self) -> dict[str, str]:
        """Conditional request headers that let the upstream answer 304."""
        return revalidation_headers(self.previous)

    def rested(self, resting: bool) -> Serve | None:
        """The upstream was unreachable a moment ago: a page we once had, without asking."""
        if resting and may_serve_stale(self.previous):
            return _stale(self.previous, "upstream unreachable")
        return None

    def answered(
        self, answer: Answer, what: str, now: float, make: MakeEntry
    ) -> Store | NeedsParse:
        """The upstream's answer: confirmed (304), a body to parse (200) or none (404/410).
        Raises UpstreamRefused for 401/403 and UpstreamError for any other status."""
        previous = self.previous
        if answer.status == 304 and previous is not None and previous.status == 200:
            confirmed = dataclasses.replace(previous, fetched_at=now)
            return Store(confirmed, "revalidated", previous)
        check_page_status(answer.status, what)
        if answer.status == 200:
            return NeedsParse(previous, answer)
        negative = make(404, None, now, answer.etag, answer.last_modified)
        return Store(negative, "miss", previous)


@dataclass(frozen=True)
class NeedsFetch(_AskUpstream):
    """Nothing stored: a peer's copy is looked for first (when the kind has peers), then the
    upstream is asked."""

    previous: Any = None
    peer_asked: bool = False

    def peer_answered(self, found: Any, decide: Callable[[Any], State]) -> State:
        """A peer's copy is served if fresh, else revalidated (or served stale) like ours."""
        if found is None:
            return NeedsFetch(peer_asked=True)
        if isinstance(decide(found), Serve):
            return Store(found, "shared", from_upstream=False)
        return NeedsRevalidation(found)


@dataclass(frozen=True)
class NeedsRevalidation(_AskUpstream):
    """Stored but stale (a negative entry too): ask the upstream whether it changed."""


@dataclass(frozen=True)
class NeedsParse:
    """The upstream sent a body: parse it (off the event loop)."""

    previous: Any
    answer: Any

    def parsed(self, body: Any, extra: Any, now: float, make: MakeEntry) -> Store:
        answer = self.answer
        fresh = make(200, body, now, answer.etag, answer.last_modified)
        return Store(fresh, "miss", self.previous, extra)


State = Serve | Missing | NeedsFetch | NeedsRevalidation | NeedsParse | Store


def decide(entry: Any, now: float, freshness: Freshness) -> State:
    """The one freshness decision, for stored entries and hot rendered copies alike."""
    action = page_action(
        entry,
        now,
        page_ttl=freshness.page_ttl,
        negative_ttl=freshness.negative_ttl,
        offline=freshness.offline,
    )
    if action is PageAction.SERVE:
        return Serve(entry)
    if action is PageAction.MISSING:
        return Missing()
    if action is PageAction.FETCH:
        return NeedsFetch()
    return NeedsRevalidation(entry)


def failed(previous: Any, error: UpstreamError) -> Serve:
    """The upstream could not give a usable answer: a page we once had beats an error
    (stale-if-error). A refusal (401/403) is always passed on, never cached: the credentials
    may be fixed. Otherwise the error is raised."""
    if isinstance(error, UpstreamRefused) or not may_serve_stale(previous):
        raise error
    return _stale(previous, str(error))

from dataclasses import dataclass

import pytest

from cacheproxy.documents import states
from cacheproxy.documents.driver import DocumentCache
from cacheproxy.documents.states import PageAction
from cacheproxy.errors import UpstreamError, UpstreamRefused
from cacheproxy.protocol.page import ProjectPage
from cacheproxy.storage.records import CachedPage

PAGE = ProjectPage({"name": "x", "files": []})


def entry(status=200, fetched_at=1000.0, etag='"e1"', last_modified=None):
    return CachedPage(status, PAGE if status == 200 else None, fetched_at, etag, last_modified)


def action(e, now, offline=False):
    return states.page_action(e, now, page_ttl=600, negative_ttl=60, offline=offline)


def test_fresh_page_is_served_then_revalidated():
    assert action(entry(), 1000 + 599) is PageAction.SERVE
    assert action(entry(), 1000 + 600) is PageAction.REVALIDATE


def test_negative_entries_use_their_own_ttl():
    assert action(entry(404), 1059) is PageAction.SERVE
    assert action(entry(404), 1061) is PageAction.REVALIDATE


def test_nothing_stored():
    assert action(None, 0) is PageAction.FETCH
    assert action(None, 0, offline=True) is PageAction.MISSING


def test_offline_serves_whatever_is_stored():
    assert action(entry(), 10**9, offline=True) is PageAction.SERVE


def test_clock_going_backwards_counts_as_stale():
    assert action(entry(), 10) is PageAction.REVALIDATE


def test_revalidation_headers():
    assert states.revalidation_headers(entry(last_modified="Mon")) == {
        "If-None-Match": '"e1"',
        "If-Modified-Since": "Mon",
    }
    assert states.revalidation_headers(entry(404)) == {}
    assert states.revalidation_headers(None) == {}


def test_stale_if_error_only_for_real_pages():
    assert states.may_serve_stale(entry())
    assert not states.may_serve_stale(entry(404))
    assert not states.may_serve_stale(None)


def test_cacheable_statuses():
    assert states.is_cacheable_page_status(200)
    assert states.is_cacheable_page_status(404)
    for status in (401, 403, 500, 502, 503, 429):
        assert not states.is_cacheable_page_status(status)


def test_max_age_counts_down():
    assert states.page_max_age(entry(), 1100, 600, 60) == 500
    assert states.page_max_age(entry(), 5000, 600, 60) == 0


def test_upstream_rests_after_being_unreachable():
    assert not states.upstream_resting(None, 1000)
    assert states.upstream_resting(1000, 1000 + states.UPSTREAM_REST_SECONDS - 1)
    assert not states.upstream_resting(1000, 1000 + states.UPSTREAM_REST_SECONDS)


# The states a cached document goes through (documents/states.py): pure transitions.


@dataclass(frozen=True)
class Answer:
    status: int
    etag: str | None = '"e2"'
    last_modified: str | None = None


def decide(e, now, offline=False):
    return states.decide(e, now, states.Freshness(600, 60, offline))


def test_decide_names_the_next_step():
    assert decide(entry(), 1000 + 599) == states.Serve(entry())
    assert decide(entry(), 1000 + 600) == states.NeedsRevalidation(entry())
    assert decide(None, 0) == states.NeedsFetch()
    assert decide(None, 0, offline=True) == states.Missing()


def test_a_304_confirms_the_stored_entry():
    asking = states.NeedsRevalidation(entry())
    assert asking.headers == {"If-None-Match": '"e1"'}
    store = asking.answered(Answer(304), "x", 2000, CachedPage)
    assert store == states.Store(entry(fetched_at=2000), "revalidated", entry())
    assert store.stored(True) == states.Serve(entry(fetched_at=2000), "revalidated")
    assert store.stored(False).outcome == "uncached"


def test_a_304_for_a_negative_entry_is_an_error():
    with pytest.raises(UpstreamError, match="upstream answered 304 for x"):
        states.NeedsRevalidation(entry(404)).answered(Answer(304), "x", 2000, CachedPage)


def test_a_body_is_parsed_then_stored_and_none_is_stored_negative():
    parse = states.NeedsFetch(peer_asked=True).answered(Answer(200), "x", 2000, CachedPage)
    assert isinstance(parse, states.NeedsParse)
    store = parse.parsed(PAGE, "render", 2001, CachedPage)
    assert store == states.Store(CachedPage(200, PAGE, 2001, '"e2"'), "miss", None, "render")
    gone = states.NeedsRevalidation(entry()).answered(Answer(404), "x", 2000, CachedPage)
    assert gone == states.Store(CachedPage(404, None, 2000, '"e2"'), "miss", entry())


@pytest.mark.parametrize("status", [401, 403])
def test_refusals_are_raised_and_never_stored(status):
    with pytest.raises(UpstreamRefused):
        states.NeedsRevalidation(entry()).answered(Answer(status), "x", 2000, CachedPage)
    with pytest.raises(UpstreamRefused):
        states.failed(entry(), UpstreamRefused(status))


def test_stale_if_error_and_while_the_upstream_rests():
    error = UpstreamError("upstream answered 503 for x")
    assert states.failed(entry(), error) == states.Serve(entry(), "stale", str(error))
    with pytest.raises(UpstreamError):
        states.failed(entry(404), error)
    with pytest.raises(UpstreamError):
        states.failed(None, error)
    rested = states.NeedsRevalidation(entry()).rested(True)
    assert rested == states.Serve(entry(), "stale", "upstream unreachable")
    assert states.NeedsRevalidation(entry()).rested(False) is None
    assert states.NeedsFetch().rested(True) is None


def test_a_peers_copy_is_served_if_fresh_else_revalidated():
    asking = states.NeedsFetch()

    def at(now):
        return lambda found: decide(found, now)

    assert asking.peer_answered(entry(), at(1001)) == states.Store(
        entry(), "shared", from_upstream=False
    )
    assert asking.peer_answered(entry(), at(5000)) == states.NeedsRevalidation(entry())
    assert asking.peer_answered(None, at(5000)) == states.NeedsFetch(peer_asked=True)


@pytest.mark.parametrize("offline", [False, True])
def test_a_hot_copys_freshness_is_the_decision_to_serve(offline):
    """DocumentCache.is_fresh (asked at every hot page request, no state made) and max_age
    agree with decide() and the freshness settings, whatever the entry and the clock."""
    freshness = states.Freshness(page_ttl=600, negative_ttl=60, offline=offline)
    now = [0.0]
    cache = DocumentCache(freshness, disk=None, clock=lambda: now[0])  # type: ignore[arg-type]
    for e in (None, entry(), entry(404), entry(410)):
        for now[0] in (900.0, 1000.0, 1059.0, 1061.0, 1599.0, 1600.0, 10.0**9):
            served = isinstance(states.decide(e, now[0], freshness), states.Serve)
            assert cache.is_fresh(e) is served, (e, now[0])
            if e is not None:
                assert cache.max_age(e) == freshness.max_age(e, now[0])

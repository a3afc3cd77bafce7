from cacheproxy.documents import policy
from cacheproxy.documents.policy import PageAction
from cacheproxy.protocol.page import ProjectPage
from cacheproxy.storage.records import CachedPage

PAGE = ProjectPage({"name": "x", "files": []})


def entry(status=200, fetched_at=1000.0, etag='"e1"', last_modified=None):
    return CachedPage(status, PAGE if status == 200 else None, fetched_at, etag, last_modified)


def action(e, now, offline=False):
    return policy.page_action(e, now, page_ttl=600, negative_ttl=60, offline=offline)


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
    assert policy.revalidation_headers(entry(last_modified="Mon")) == {
        "If-None-Match": '"e1"',
        "If-Modified-Since": "Mon",
    }
    assert policy.revalidation_headers(entry(404)) == {}
    assert policy.revalidation_headers(None) == {}


def test_stale_if_error_only_for_real_pages():
    assert policy.may_serve_stale(entry())
    assert not policy.may_serve_stale(entry(404))
    assert not policy.may_serve_stale(None)


def test_cacheable_statuses():
    assert policy.is_cacheable_page_status(200)
    assert policy.is_cacheable_page_status(404)
    for status in (401, 403, 500, 502, 503, 429):
        assert not policy.is_cacheable_page_status(status)


def test_max_age_counts_down():
    assert policy.page_max_age(entry(), 1100, 600, 60) == 500
    assert policy.page_max_age(entry(), 5000, 600, 60) == 0


def test_upstream_rests_after_being_unreachable():
    assert not policy.upstream_resting(None, 1000)
    assert policy.upstream_resting(1000, 1000 + policy.UPSTREAM_REST_SECONDS - 1)
    assert not policy.upstream_resting(1000, 1000 + policy.UPSTREAM_REST_SECONDS)

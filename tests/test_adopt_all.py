"""A page's entries adopted all at once (Adopter.adopt_all) are adopted exactly as one at a
time, or not at all: the page then goes through adopt() entry by entry."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cacheproxy.protocol.parse import (
    ANY_HOST,
    Adopter,
    FileHosts,
    _printable,
    parse_html,
    parse_json_served,
)

PAGE_URL = "https://index.example/simple/a/"
HOSTS = FileHosts(("files.example",), PAGE_URL)

NAMES = st.sampled_from(
    [
        "a-1.0-py3-none-any.whl",
        "a-1.0.tar.gz",
        "a-2.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        "A_b~c-3.zip",
        "a b-1.0.tar.gz",  # quoted in its URL
        ".hidden.whl",
        "x/y.whl",
        "ünï-1.0.tar.gz",
        "",
        "a" * 256,
    ]
)
URLS = st.sampled_from(
    [
        "https://files.example/p/a.whl",
        "https://files.example/q/b.tar.gz",
        "/p/a.whl",
        "//files.example/p/a.whl",
        "a.whl",
        "https://other.example/p/a.whl",
        "https://files.example/p/a.whl#sha256=aa",
        "https://files.example/p/../a.whl",
        "http://files.example/p/a.whl",
        "https://files.example",
        "https://files.example/p/\x07.whl",
        "ftp://files.example/a.whl",
        "",
    ]
)
EXTRAS = st.fixed_dictionaries(
    {},
    optional={
        "hashes": st.dictionaries(st.sampled_from(["sha256", "md5"]), st.text(max_size=4)),
        "core-metadata": st.one_of(st.booleans(), st.just({"sha256": "cd" * 32}), st.just(1)),
        "data-dist-info-metadata": st.one_of(st.booleans(), st.just({"sha256": "ef" * 32})),
        "provenance": st.one_of(
            st.none(), st.just(""), URLS, st.just(5), st.just("https://files.example/p.att")
        ),
        "yanked": st.one_of(st.booleans(), st.text(max_size=8)),
        "size": st.integers(min_value=0, max_value=2**40),
        # What else an upstream may put in an entry: floats (NaN too), integers past 64
        # bits, objects in lists, strings that hold what parts two encoded entries.
        "extra": st.recursive(
            st.none()
            | st.booleans()
            | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats()
            | st.text(alphabet='ab{},"\\', max_size=6),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=3), inner, max_size=3)
            ),
            max_leaves=6,
        ),
    },
)
ENTRY = st.builds(
    lambda fields, extras: {**fields, **extras},
    st.fixed_dictionaries({"filename": NAMES | st.integers(), "url": URLS | st.none()}),
    EXTRAS,
)
PLAIN_NAMES = st.from_regex(r"[A-Za-z0-9_~-][A-Za-z0-9_.~-]{0,12}", fullmatch=True)


@st.composite
def pages(draw) -> list:
    """Mostly the usual page (plain names of their own, one origin), with a few things
    changed that may make it unusual."""
    names = draw(st.lists(PLAIN_NAMES, min_size=1, max_size=5, unique=True))
    prefix = draw(st.sampled_from(["https://files.example/p/", "/p/"]))
    entries: list = [{"filename": name, "url": prefix + name, **draw(EXTRAS)} for name in names]
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        number = draw(st.integers(min_value=0, max_value=len(entries) - 1))
        change = draw(st.sampled_from(["filename", "url", "entry"]))
        if change == "entry":
            entries[number] = draw(ENTRY | st.just("not an object"))
        elif isinstance(entries[number], dict):
            entries[number][change] = draw(NAMES if change == "filename" else URLS)
    return entries


PAGES = pages()


def adopted_one_at_a_time(entries: list, hosts: FileHosts) -> tuple:
    adopter = Adopter(PAGE_URL, hosts)
    results = [adopter.adopt(entry, number + 1) for number, entry in enumerate(entries)]
    return results, adopter.dropped, adopter.extra_origins


@pytest.mark.parametrize("hosts", [HOSTS, ANY_HOST], ids=["allowed hosts", "any host"])
@given(entries=PAGES)
def test_adopted_at_once_as_one_at_a_time_or_not_at_all(hosts, entries):
    original = copy.deepcopy(entries)
    expected, expected_dropped, expected_extra = adopted_one_at_a_time(
        copy.deepcopy(entries), hosts
    )
    adopter = Adopter(PAGE_URL, hosts)
    every = adopter.adopt_all(entries)
    if every is None:
        assert entries == original  # left as it was, for adopt() to take one at a time
        return
    names, origins = every
    assert None not in expected  # nothing a one-at-a-time adoption leaves out
    assert entries == [entry for entry, _ in expected]
    assert origins == [origin for _, origin in expected]
    assert names == [entry["filename"] for entry, _ in expected]
    assert adopter.dropped == expected_dropped  # provenance left out, told the same way
    assert adopter.extra_origins == expected_extra


def usual_page(count: int, url: str = "https://files.example/packages/{}") -> list[dict]:
    return [
        {
            "filename": f"a-1.{n}-py3-none-any.whl",
            "url": url.format(f"a-1.{n}-py3-none-any.whl"),
            "hashes": {"sha256": f"{n:064x}"},
            "provenance": None,
            "size": n,
        }
        for n in range(count)
    ]


@pytest.mark.parametrize(
    "url", ["https://files.example/packages/{}", "/packages/{}"], ids=["absolute", "rooted"]
)
def test_the_usual_page_is_adopted_at_once(url):
    entries = usual_page(3, url)
    every = Adopter(PAGE_URL, HOSTS).adopt_all(entries)
    assert every is not None
    names, origins = every
    assert names == [entry["filename"] for entry in entries]
    assert [entry["url"] for entry in entries] == names
    root = "https://files.example" if url[0] == "h" else "https://index.example"
    assert origins == [f"{root}/packages/{name}" for name in names]


@pytest.mark.parametrize(
    "change",
    [
        {"filename": "a-1.0-py3-none-any.whl"},  # listed twice
        {"filename": "a b-1.whl"},
        {"url": "https://other.example/x.whl"},
        {"url": "https://files.example/x.whl#sha256=00"},
        {"url": "/packages/x.whl"},  # rooted beside absolute ones
    ],
)
def test_a_page_with_anything_unusual_is_adopted_one_at_a_time(change):
    entries = usual_page(3)
    entries[1].update(change)
    original = copy.deepcopy(entries)
    assert Adopter(PAGE_URL, HOSTS).adopt_all(entries) is None
    assert entries == original


@given(entries=PAGES)
def test_a_parse_is_the_same_whichever_way_its_entries_are_adopted(entries):
    body = json.dumps({"meta": {"api-version": "1.1"}, "name": "a", "files": entries}).encode()
    page, served = parse_json_served(body, PAGE_URL, HOSTS)
    one_at_a_time = _without_adopt_all(lambda: parse_json_served(body, PAGE_URL, HOSTS))
    assert (page.body, page.dropped, served) == (
        one_at_a_time[0].body,
        one_at_a_time[0].dropped,
        one_at_a_time[1],
    )


def test_an_html_page_is_adopted_at_once_as_one_at_a_time(monkeypatch):
    anchors = "".join(
        f'<a href="/p/a-1.{n}-py3-none-any.whl#sha256={n:064x}" data-core-metadata="true">'
        f"a-1.{n}-py3-none-any.whl</a>"
        for n in range(3)
    )
    body = f"<html><body>{anchors}<a href='/p/a-1.tar.gz'>a-1.tar.gz</a></body></html>".encode()
    reference = _without_adopt_all(lambda: parse_html(body, PAGE_URL, "a", HOSTS))
    answers = []
    adopt_all = Adopter.adopt_all
    monkeypatch.setattr(
        Adopter,
        "adopt_all",
        lambda self, entries: answers.append(adopt_all(self, entries)) or answers[-1],
    )
    page = parse_html(body, PAGE_URL, "a", HOSTS)
    assert answers and answers[0] is not None  # taken at once
    assert len(page) == 4
    assert (page.body, page.dropped) == (reference.body, reference.dropped)


def _without_adopt_all(parse):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Adopter, "adopt_all", lambda self, entries: None)
        return parse()


@given(st.text() | st.text(st.characters(max_codepoint=127)))
def test_urls_are_printable_as_str_isprintable_tells(text):
    assert _printable(text) == text.isprintable()

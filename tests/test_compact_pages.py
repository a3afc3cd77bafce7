"""Pages are stored and held as compact bytes, answer find_source as the parsed page does,
expand to the same page, and entries pickled by earlier versions still load."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cacheproxy.protocol import compact as compact_module
from cacheproxy.protocol.compact import (
    CompactPage,
    encode_json,
    encode_strings,
    encode_texts,
    filenames,
)
from cacheproxy.protocol.page import ProjectPage, find_source, with_file_facts
from cacheproxy.protocol.parse import client_url, parse_json, parse_json_served
from cacheproxy.protocol.render import render_compact_json, render_json
from cacheproxy.storage.entries import PAGE
from cacheproxy.storage.local import Store
from cacheproxy.storage.records import CachedPage, decode_page, encode_page

WHEEL = "demo-1.0-py3-none-any.whl"
SDIST = "demo-1.0.tar.gz"


def page() -> ProjectPage:
    files = [
        {
            "filename": WHEEL,
            "url": WHEEL,
            "hashes": {"sha256": "ab" * 32},
            "size": 10,
            "core-metadata": {"sha256": "cd" * 32},
            "provenance": WHEEL + ".provenance",
        },
        {"filename": SDIST, "url": SDIST, "hashes": {}, "yanked": "broken\nline"},
    ]
    origins = {
        WHEEL: "https://files.example/a/" + WHEEL,
        SDIST: "https://files.example/b/" + SDIST,
        WHEEL + ".provenance": "https://files.example/a/" + WHEEL + ".provenance",
    }
    data = {"meta": {"api-version": "1.1"}, "name": "demo", "files": files, "versions": ["1.0"]}
    return ProjectPage(data, origins)


def test_compact_page_answers_as_the_parsed_page():
    parsed = page()
    compact = CompactPage.of(parsed)
    names = [WHEEL, SDIST, WHEEL + ".metadata", WHEEL + ".provenance", "other.whl"]
    for name in names:
        assert find_source(compact, name) == find_source(parsed, name)
    assert compact.name == "demo" and len(compact) == 2
    assert compact.expand() == parsed
    assert dict(compact.origins) == parsed.origins


def test_a_page_without_files_round_trips():
    empty = ProjectPage({"meta": {"api-version": "1.0"}, "name": "none", "files": []}, {})
    assert CompactPage.of(empty).expand() == empty
    assert CompactPage.of(empty).file("x") is None


def test_entries_are_stored_as_bytes_and_read_back():
    entry = CachedPage(200, page(), 12.5, etag='"e"', last_modified="yesterday")
    value = encode_page(entry)
    assert isinstance(value, bytes) and b"pickle" not in value
    back = decode_page(value)
    assert isinstance(back.page, CompactPage) and back.page.expand() == entry.page
    assert (back.status, back.fetched_at, back.etag, back.last_modified) == (
        200,
        12.5,
        '"e"',
        "yesterday",
    )
    missing = decode_page(encode_page(CachedPage(404, None, 3.0)))
    assert missing == CachedPage(404, None, 3.0)


async def test_a_page_pickled_by_an_earlier_version_still_loads(tmp_path):
    store = Store(tmp_path / "cache", 10**9)
    await store.open()
    try:
        old = CachedPage(200, page(), 1.0, etag='"old"')
        store.cache.set((PAGE, "demo"), old, tag="page-200")  # what earlier versions wrote
        loaded = await store.get_page("demo")
        assert isinstance(loaded.page, CompactPage) and loaded.page.expand() == old.page
        assert loaded.etag == '"old"'
        await store.put_page("demo", loaded)  # written back in the new form
        assert isinstance(store.cache.get((PAGE, "demo")), bytes)
        assert (await store.get_page("demo")).page.expand() == old.page
        assert await store.projects() == ["demo"]
    finally:
        await store.close()


def test_file_names_are_read_without_expanding():
    assert filenames(CompactPage.of(page())) == filenames(page()) == {WHEEL, SDIST}


def varied_page() -> ProjectPage:
    """Every shape of entry the render treats apart: wheels with and without metadata, with
    metadata keys set false or named inside a value, sdists, names beyond ASCII."""
    files = [
        {"filename": "a-1.0-py3-none-any.whl", "url": "a1.whl", "hashes": {"sha256": "01" * 32}},
        {"filename": "a-1.1-py3-none-any.whl", "url": "a2.whl", "core-metadata": False},
        {"filename": "a-1.2-py3-none-any.whl", "url": "a3.whl", "data-dist-info-metadata": True},
        {"filename": "a-1.3-py3-none-any.whl", "url": "a4.whl", "yanked": 'no "core-metadata"'},
        {"filename": "a-1.4-py3-none-any.whl", "url": "a5.whl", "core-metadata": {"sha256": "f"}},
        {"filename": "a-1.0.tar.gz", "url": "a.tar.gz", "requires-python": ">=3.9"},
        {"filename": "a-2.0-py3-none-any.whl", "url": "ä.whl", "yanked": "grüße\ttab"},
        {"filename": "a-2.1-py3-none-any.whl", "url": "a6.whl", "size": 5},
    ]
    origins = {entry["filename"]: "https://files.example/" + entry["url"] for entry in files}
    data = {"meta": {"api-version": "1.1"}, "name": "a", "files": files, "versions": ["1.0"]}
    return ProjectPage(data, origins)


def test_the_json_render_from_stored_lines_is_the_expanded_render():
    parsed = varied_page()
    compact = CompactPage.of(parsed)
    names = [entry["filename"] for entry in parsed.data["files"]]
    every_fact = [
        {},
        {"size": 7},
        {"upload-time": "2024-01-01T00:00:00Z"},
        {"metadata-sha256": "ee" * 32},
        {"metadata-unreadable": True},
        {"size": 9, "upload-time": "2020-02-02T00:00:00Z", "metadata-sha256": "aa" * 32},
    ]
    cases = [{}] + [{name: fact for name in names} for fact in every_fact]
    cases.append({name: every_fact[i % len(every_fact)] for i, name in enumerate(names)})
    for facts in cases:
        expected = render_json(with_file_facts(compact.expand(), facts))
        assert render_compact_json(compact, facts) == expected
    without_files = ProjectPage({"meta": {"api-version": "1.0"}, "name": "none", "files": []})
    empty = CompactPage.of(without_files)
    assert render_compact_json(empty, {}) == render_json(with_file_facts(empty.expand(), {}))
    bare_files = {"name": "b", "files": [{"filename": "b.whl", "url": "b.whl"}]}
    bare = CompactPage.of(ProjectPage(bare_files, {"b.whl": "https://files.example/b.whl"}))
    assert render_compact_json(bare, {}) == render_json(with_file_facts(bare.expand(), {}))


def test_files_whose_names_share_a_hash_are_told_apart(monkeypatch):
    # As if every name hashed alike: each lookup must tell them apart by the entries.
    monkeypatch.setattr(compact_module, "hash", lambda name: 7, raising=False)
    parsed = varied_page()
    compact = CompactPage.of(parsed)
    for entry in parsed.data["files"]:
        assert compact.file(entry["filename"]) == entry
        assert compact.origin(entry["filename"]) == parsed.origins[entry["filename"]]
        assert entry["filename"] in compact.origins
    assert compact.file("absent-1.0.tar.gz") is None and "absent" not in compact.origins
    assert compact.expand() == parsed


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), JSON_VALUES, max_size=6))
def test_entries_are_encoded_as_json_dumps_encodes_them(entry):
    """Stored lines and ETags depend on these bytes: the encoder made once must write what
    json.dumps writes, whatever an upstream put in an entry."""
    try:
        expected = json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: neither can write it
        with pytest.raises(UnicodeEncodeError):
            encode_json(entry)
        return
    assert encode_json(entry) == expected


def float_free(value) -> bool:
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        value = list(value.values())
    return all(map(float_free, value)) if isinstance(value, list) else True


@given(st.lists(st.dictionaries(st.text(), JSON_VALUES, max_size=4).filter(float_free)))
def test_entries_without_floats_are_encoded_at_once_as_each_alone(entries):
    expected = []
    try:
        expected = [encode_json(entry) for entry in entries]
    except UnicodeEncodeError:  # a lone surrogate: neither way can write it
        with pytest.raises(UnicodeEncodeError):
            encode_texts(entries, floats=False)
        return
    assert encode_texts(entries, floats=False) == expected


@pytest.mark.parametrize(
    "entries",
    [
        [{"a": [{"b": 1}, {"c": 2}]}, {"d": 3}],  # objects in a list, in an entry
        [{"a": "},{"}, {"b": "x"}],
        [{}, {}],
        [{"a": 2**70}, {"b": 1}],  # past 64 bits
    ],
)
def test_entries_that_hold_what_parts_two_are_encoded_as_each_alone(entries):
    assert encode_texts(entries, floats=False) == [encode_json(entry) for entry in entries]


@given(st.lists(st.text()))
def test_strings_are_encoded_at_once_as_each_alone(strings):
    try:
        expected = [encode_json(string) for string in strings]
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            encode_strings(strings)
        return
    assert encode_strings(strings) == expected


def test_what_json_cannot_hold_is_refused_as_json_dumps_refuses_it():
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        encode_json({"a": [object()]})


@given(st.text(max_size=80))
def test_a_file_url_is_the_quoted_name(name):
    assert client_url(name) == quote(name, safe="")


UPSTREAM_ENTRY = st.fixed_dictionaries(
    {
        "filename": st.sampled_from(
            ["a-1.0-py3-none-any.whl", "a-1.0.tar.gz", "a-2.0-cp311-cp311-linux_x86_64.whl"]
        ),
        "url": st.sampled_from(["f.whl", "https://files.example/f.whl", "/f.whl#sha256=aa"]),
    },
    optional={
        "hashes": st.dictionaries(st.sampled_from(["sha256", "md5"]), st.text(max_size=8)),
        "core-metadata": st.one_of(st.booleans(), st.just({"sha256": "cd" * 32})),
        "data-dist-info-metadata": st.one_of(st.booleans(), st.just({"sha256": "ef" * 32})),
        "yanked": st.one_of(st.booleans(), st.text(max_size=20)),
        "size": st.integers(min_value=0, max_value=2**40),
        "provenance": st.one_of(st.none(), st.just("f.whl.provenance")),
        "requires-python": st.text(max_size=10),
    },
)


@given(
    st.lists(UPSTREAM_ENTRY, max_size=6),
    st.text(max_size=6).filter(lambda key: key not in ("files", "name", "meta")),
)
def test_a_parse_renders_the_page_as_the_stored_lines_render_it(entries, extra):
    """A cold page's first render is made by its parse: byte for byte the render of its
    stored lines when nothing is known of its files."""
    upstream = {"meta": {"api-version": "1.1"}, "name": "a", "files": entries, extra: extra}
    body = json.dumps(upstream).encode()
    page, served = parse_json_served(body, "https://index.example/simple/a/")
    assert served == render_compact_json(page, {})
    assert parse_json(body, "https://index.example/simple/a/").body == page.body

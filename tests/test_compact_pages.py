"""Pages are stored and held as compact bytes, answer find_source as the parsed page does,
expand to the same page, and entries pickled by earlier versions still load."""

from __future__ import annotations

from cacheproxy.cache.policy import CachedPage
from cacheproxy.simple.compact import CompactPage, filenames
from cacheproxy.simple.page import ProjectPage, find_source
from cacheproxy.store import pagecodec
from cacheproxy.store.local import Store
from cacheproxy.store.maintenance import PAGE

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
    value = pagecodec.encode(entry)
    assert isinstance(value, bytes) and b"pickle" not in value
    back = pagecodec.decode(value)
    assert isinstance(back.page, CompactPage) and back.page.expand() == entry.page
    assert (back.status, back.fetched_at, back.etag, back.last_modified) == (
        200,
        12.5,
        '"e"',
        "yesterday",
    )
    missing = pagecodec.decode(pagecodec.encode(CachedPage(404, None, 3.0)))
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

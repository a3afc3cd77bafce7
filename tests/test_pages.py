import json

import pytest

from cacheproxy.simple.page import (
    PageError,
    find_source,
    parse_html_page,
    parse_json_page,
)
from cacheproxy.simple.render import render_html, render_json

PAGE_URL = "https://index.example/simple/demo/"
SHA = "a" * 64
META_SHA = "b" * 64

UPSTREAM_JSON = {
    "meta": {"api-version": "1.3", "_last-serial": "7"},
    "name": "Demo",
    "versions": ["1.0", "2.0"],
    "project-status": {"status": "active"},
    "_private": {"kept": True},
    "files": [
        {
            "filename": "demo-1.0.tar.gz",
            "url": "../../files/demo-1.0.tar.gz",
            "hashes": {"sha256": SHA},
            "requires-python": ">=3.8",
            "yanked": "broken build",
            "size": 10,
            "upload-time": "2024-01-01T00:00:00Z",
        },
        {
            "filename": "demo-2.0-py3-none-any.whl",
            "url": "https://files.example/x/demo-2.0-py3-none-any.whl#sha256=" + SHA,
            "hashes": {"sha256": SHA},
            "core-metadata": {"sha256": META_SHA},
            "provenance": None,
            "_extra": 1,
        },
    ],
}


def test_json_page_keeps_every_field_and_rewrites_urls():
    page = parse_json_page(json.dumps(UPSTREAM_JSON).encode(), PAGE_URL)
    data = json.loads(render_json(page))
    for key in ("meta", "name", "versions", "project-status", "_private"):
        assert data[key] == UPSTREAM_JSON[key]
    first, second = data["files"]
    assert first["url"] == "demo-1.0.tar.gz"
    assert first["yanked"] == "broken build"
    assert first["requires-python"] == ">=3.8"
    assert first["upload-time"] == "2024-01-01T00:00:00Z"
    assert second["_extra"] == 1
    assert second["core-metadata"] == second["data-dist-info-metadata"] == {"sha256": META_SHA}
    assert page.origins == {
        "demo-1.0.tar.gz": "https://index.example/files/demo-1.0.tar.gz",
        "demo-2.0-py3-none-any.whl": "https://files.example/x/demo-2.0-py3-none-any.whl",
    }


def test_find_source_for_file_and_metadata():
    page = parse_json_page(json.dumps(UPSTREAM_JSON).encode(), PAGE_URL)
    source = find_source(page, "demo-2.0-py3-none-any.whl.metadata")
    assert source.url == "https://files.example/x/demo-2.0-py3-none-any.whl.metadata"
    assert source.hash_value == META_SHA
    assert find_source(page, "demo-1.0.tar.gz").size == 10
    assert find_source(page, "demo-1.0.tar.gz.metadata") is None
    assert find_source(page, "other.whl") is None


def test_html_roundtrip_keeps_fields():
    page = parse_json_page(json.dumps(UPSTREAM_JSON).encode(), PAGE_URL)
    html_body = render_html(page)
    assert b'data-requires-python="&gt;=3.8"' in html_body
    again = parse_html_page(html_body, "http://proxy.test/simple/demo/", "demo")
    first, second = again.data["files"]
    assert first["hashes"] == {"sha256": SHA}
    assert first["yanked"] == "broken build"
    assert first["requires-python"] == ">=3.8"
    assert second["core-metadata"] == {"sha256": META_SHA}
    assert "yanked" not in second
    assert again.data["meta"]["api-version"] == "1.3"
    assert again.origins["demo-1.0.tar.gz"] == "http://proxy.test/simple/demo/demo-1.0.tar.gz"


def test_html_upstream_page():
    body = b"""<html><body>
    <a href="/files/pkg-1.0-py3-none-any.whl#sha256=ABC" data-yanked="">pkg-1.0-py3-none-any.whl</a>
    <a href="pkg-0.9.tar.gz#md5=123" data-dist-info-metadata="true" data-gpg-sig="false">
      pkg-0.9.tar.gz</a>
    <a>no href</a>
    </body></html>"""
    page = parse_html_page(body, "http://up.test/simple/pkg/", "pkg")
    wheel, sdist = page.data["files"]
    assert wheel["yanked"] is True
    assert wheel["hashes"] == {"sha256": "abc"}
    assert page.origins[wheel["filename"]] == "http://up.test/files/pkg-1.0-py3-none-any.whl"
    assert sdist["filename"] == "pkg-0.9.tar.gz"
    assert sdist["core-metadata"] is True
    assert sdist["gpg-sig"] is False
    assert find_source(page, "pkg-0.9.tar.gz").hash_name == "md5"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"name": "x"}',
        b'{"files": []}',
        b'{"name": "x", "files": [{"filename": "../evil", "url": "x"}]}',
    ],
)
def test_bad_json_pages(body):
    with pytest.raises(PageError):
        parse_json_page(body, PAGE_URL)


def test_html_escapes_hostile_values():
    data = dict(UPSTREAM_JSON, name="<script>")
    data["files"] = [dict(UPSTREAM_JSON["files"][0], **{"requires-python": '"><script>'})]
    body = render_html(parse_json_page(json.dumps(data).encode(), PAGE_URL))
    assert b"<script>" not in body

import json

import pytest

from cacheproxy.errors import PageError
from cacheproxy.protocol.page import find_source
from cacheproxy.protocol.parse import FileHosts, parse_html_page, parse_json_page
from cacheproxy.protocol.render import render_html, render_json

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


GOOD = {"filename": "demo-1.0.tar.gz", "url": "../../files/demo-1.0.tar.gz", "hashes": {}}
BAD_ENTRIES = [
    {"filename": "../../evil.whl", "url": "x.whl"},
    {"filename": "", "url": "x.whl"},
    {"filename": "evil\n.whl", "url": "x.whl"},
    {"filename": "evil\x1b[2J.whl", "url": "x.whl"},
    {"url": "x.whl"},
    {"filename": 7, "url": "x.whl"},
    {"filename": "nourl-1.0.tar.gz"},
    {"filename": "nourl-2.0.tar.gz", "url": None},
    {"filename": "js-1.0.tar.gz", "url": "javascript:alert(1)"},
    {"filename": "local-1.0.tar.gz", "url": "file:///etc/passwd"},
    {"filename": "data-1.0.tar.gz", "url": "data:application/zip;base64,UEsFBg=="},
    {"filename": "nohost-1.0.tar.gz", "url": "http:///x.tar.gz"},
    {"filename": "port-1.0.tar.gz", "url": "http://host:99999/x.tar.gz"},
    {"filename": "creds-1.0.tar.gz", "url": "ftp://user:s3cret@host/creds-1.0.tar.gz"},
    "not an object",
]


def json_page(*files) -> bytes:
    return json.dumps({"name": "demo", "files": list(files)}).encode()


def test_bad_json_entries_are_dropped_and_the_rest_kept():
    page = parse_json_page(json_page(*BAD_ENTRIES[:7], GOOD, *BAD_ENTRIES[7:]), PAGE_URL)
    assert [f["filename"] for f in page.data["files"]] == ["demo-1.0.tar.gz"]
    assert list(page.origins) == ["demo-1.0.tar.gz"]
    assert len(page.dropped) == len(BAD_ENTRIES)
    for reason in page.dropped:
        assert reason.isprintable() and "s3cret" not in reason
    assert "dropped" not in render_json(page).decode()
    assert any("evil.whl" in r and "not a valid file name" in r for r in page.dropped)
    assert any("javascript:" in r and "not http(s)" in r for r in page.dropped)
    assert any("ftp://***@host" in r for r in page.dropped)


def test_bad_html_anchors_are_dropped_and_the_rest_kept():
    body = b"""<html><body>
    <a href="../../files/demo-1.0.tar.gz">demo-1.0.tar.gz</a>
    <a href="x.whl">../../evil.whl</a>
    <a href="javascript:alert(1)">js-1.0.tar.gz</a>
    <a href="file:///etc/passwd">passwd-1.0.tar.gz</a>
    <a>nohref-1.0.tar.gz</a>
    <a href="x.tar.gz">demo&#10;-2.0.tar.gz</a>
    </body></html>"""
    page = parse_html_page(body, PAGE_URL, "demo")
    assert [f["filename"] for f in page.data["files"]] == ["demo-1.0.tar.gz"]
    assert page.data["versions"] == ["1.0"]
    assert len(page.dropped) == 5


def test_a_filename_listed_twice_keeps_the_first_listing_whole():
    first = dict(GOOD, url="https://a.example/first.tar.gz", hashes={"sha256": "1" * 64})
    second = dict(GOOD, url="https://b.example/second.tar.gz", hashes={"sha256": "2" * 64})
    html_body = (
        f'<a href="{first["url"]}#sha256={"1" * 64}">demo-1.0.tar.gz</a>'
        f'<a href="{second["url"]}#sha256={"2" * 64}">demo-1.0.tar.gz</a>'
    ).encode()
    for page in (
        parse_json_page(json_page(first, second), PAGE_URL),
        parse_json_page(json_page(first, second, first), PAGE_URL),
        parse_html_page(html_body, PAGE_URL, "demo"),
    ):
        assert len(page.data["files"]) == 1
        source = find_source(page, "demo-1.0.tar.gz")
        assert (source.url, source.hash_value) == ("https://a.example/first.tar.gz", "1" * 64)
        assert page.dropped and all("listed again" in r for r in page.dropped)


def test_a_bad_provenance_url_drops_only_the_provenance():
    entry = dict(GOOD, provenance="javascript:alert(1)")
    page = parse_json_page(json_page(entry), PAGE_URL)
    assert page.data["files"][0]["provenance"] is None
    assert list(page.origins) == ["demo-1.0.tar.gz"]
    assert len(page.dropped) == 1


def test_file_hosts_limit_where_files_may_come_from():
    hosts = FileHosts(("files.example", "*.cdn.example"), upstream="https://index.example/simple/")
    files = [
        dict(GOOD, filename=f"demo-{n}.tar.gz", url=url)
        for n, url in enumerate(
            [
                "../../files/own-origin.tar.gz",  # the upstream's own origin
                "https://files.example/a.tar.gz",
                "https://eu.cdn.example/a.tar.gz",
                "https://cdn.example/a.tar.gz",  # *.cdn.example needs a subdomain
                "http://index.example/a.tar.gz",  # another scheme: another origin
                "https://index.example:8443/a.tar.gz",
                "https://169.254.169.254/latest/meta-data",
                "https://files.example.evil/a.tar.gz",
            ]
        )
    ]
    page = parse_json_page(json_page(*files), PAGE_URL, hosts)
    assert [f["filename"] for f in page.data["files"]] == [f"demo-{n}.tar.gz" for n in range(3)]
    assert len(page.dropped) == 5
    assert all("is not among the allowed file hosts" in r for r in page.dropped)
    # No patterns: any http(s) host, as before.
    assert len(parse_json_page(json_page(*files), PAGE_URL).data["files"]) == len(files)

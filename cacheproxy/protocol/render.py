"""Pages rendered for clients: PEP 691 JSON, PEP 503 HTML, and the one place that makes a
rendered body's ETag and gzip variant."""

from __future__ import annotations

import gzip
import hashlib
import html
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cacheproxy.protocol.compact import CompactPage, encode_json
from cacheproxy.protocol.page import API_VERSION, ProjectPage, best_hash, entry_with_facts

GZIP_MIN_BYTES = 1024
# Level 1: a third of level 6's time for about a tenth more bytes. A cold resolution renders
# each page several times as the proxy learns its wheels' metadata, and every render sits
# between a client and its answer.
GZIP_LEVEL = 1


# A body at least this large is kept only gzipped: every client of a Simple index takes gzip
# (pip, uv, poetry...), and numpy's page is 1.6 MB as JSON against 0.3 MB gzipped. The rare
# client that does not take it is served the body decompressed again.
GZIP_ONLY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Rendered:
    """A rendered body with its strong ETag and, when worth it, its gzip form; a large body
    is held in that form alone."""

    etag: str
    held_body: bytes | None  # None: only the gzip form is held
    gzipped: bytes | None

    @property
    def body(self) -> bytes:
        """The body itself: CPU work when only its gzip form is held (a thread for that)."""
        if self.held_body is not None:
            return self.held_body
        assert self.gzipped is not None
        return gzip.decompress(self.gzipped)

    @property
    def size(self) -> int:
        return len(self.held_body or b"") + len(self.gzipped or b"")


def with_variants(body: bytes) -> Rendered:
    """ETag and gzip of a rendered body: CPU work, run it in a thread for large bodies."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:40] + '"'
    gzipped = gzip.compress(body, GZIP_LEVEL) if len(body) >= GZIP_MIN_BYTES else None
    held = None if gzipped is not None and len(body) >= GZIP_ONLY_BYTES else body
    return Rendered(etag, held, gzipped)


def render_json(page: ProjectPage) -> bytes:
    return json.dumps(page.data, separators=(",", ":"), ensure_ascii=False).encode()


# What a wheel without upstream metadata and without facts gets: metadata `true` (PEP 714's
# name and the legacy one), appended as with_file_facts appends it.
_METADATA_TRUE = b',"core-metadata":true,"data-dist-info-metadata":true}'


def served_entry(
    filename: str,
    line: bytes,
    known: dict[str, Any] | None = None,
    entry: dict[str, Any] | None = None,
) -> bytes:
    """A file's entry as served, from its stored line and the facts known of its file: the
    line itself when nothing changes it, decoded and encoded again only when facts or metadata
    keys the upstream sent do (entry: the line already decoded, when the caller holds it)."""
    if known is None and not filename.endswith(".whl"):
        return line
    if known is None and b'"core-metadata"' not in line and b'"data-dist-info' not in line:
        return line[:-1] + _METADATA_TRUE
    # As with_file_facts does it.
    return encode_json(entry_with_facts(json.loads(line) if entry is None else entry, known))


def wants_metadata_true(entries: list[dict[str, Any]], names: list[str]) -> list[bool]:
    """Which of these entries (adopted: metadata keys both there or both not) served_entry()
    gives metadata `true` while nothing is known of their files: wheels without the keys."""
    return [
        "core-metadata" not in entry and name.endswith(".whl")
        for entry, name in zip(entries, names, strict=True)
    ]


def served_texts(texts: list[bytes], wanting: list[bool]) -> list[bytes]:
    """served_entry() of each file while nothing is known of the files, from its line's JSON
    and whether it wants metadata `true`."""
    true = _METADATA_TRUE
    pairs = zip(texts, wanting, strict=True)
    return [text[:-1] + true if want else text for text, want in pairs]


def joined_json(head: bytes, entries: list[bytes]) -> bytes:
    """A JSON page from its data without "files" and its entries' JSON."""
    return head[:-1] + b',"files":[' + b",".join(entries) + b"]}"


def render_compact_json(page: CompactPage, facts: dict[str, dict[str, Any]]) -> bytes:
    """render_json(with_file_facts(page.expand(), facts)), byte for byte, made from the stored
    lines: only the entries that facts change are decoded and encoded again. Expanding a page
    of thousands of files into dictionaries costs more than everything else a render does."""
    parts = [
        served_entry(filename, line, facts.get(filename)) for filename, line in page.entries_json()
    ]
    return joined_json(page.head_json(), parts)  # the head is never empty: it has a name


def _attr(name: str, value: str) -> str:
    return f' {name}="{html.escape(value, quote=True)}"'


def _html_metadata_value(value: Any) -> str:
    name, digest = best_hash(value)
    return f"{name}={digest}" if name else "true"


def _meta_lines(data: dict[str, Any]) -> list[str]:
    pairs = []
    status = data.get("project-status")
    if isinstance(status, dict) and status.get("status"):
        pairs.append(("pypi:project-status", str(status["status"])))
        if status.get("reason"):
            pairs.append(("pypi:project-status-reason", str(status["reason"])))
    for key in ("tracks", "alternate-locations"):
        pairs += [(f"pypi:{key}", str(url)) for url in data.get(key) or []]
    return [f"<meta{_attr('name', name)}{_attr('content', value)}>" for name, value in pairs]


def render_html(page: ProjectPage) -> bytes:
    name = html.escape(page.name)
    version = str(page.data.get("meta", {}).get("api-version", API_VERSION))
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        f'<meta name="pypi:repository-version" content="{html.escape(version, quote=True)}">',
        *_meta_lines(page.data),
        f"<title>Links for {name}</title>",
        "</head>",
        "<body>",
        f"<h1>Links for {name}</h1>",
    ]
    for entry in page.data["files"]:
        href = entry["url"]
        hash_name, hash_value = best_hash(entry.get("hashes"))
        if hash_name:
            href += f"#{hash_name}={hash_value}"
        attrs = _attr("href", href)
        if entry.get("requires-python"):
            attrs += _attr("data-requires-python", str(entry["requires-python"]))
        yanked = entry.get("yanked")
        if yanked:
            attrs += _attr("data-yanked", yanked if isinstance(yanked, str) else "")
        if entry.get("core-metadata"):
            value = _html_metadata_value(entry["core-metadata"])
            attrs += _attr("data-core-metadata", value) + _attr("data-dist-info-metadata", value)
        if "gpg-sig" in entry:
            attrs += _attr("data-gpg-sig", "true" if entry["gpg-sig"] else "false")
        if entry.get("provenance"):
            attrs += _attr("data-provenance", str(entry["provenance"]))
        lines.append(f"<a{attrs}>{html.escape(entry['filename'])}</a><br />")
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines).encode()


def render_project_list(projects: list[str], content_type_json: bool) -> bytes:
    """The root listing: only the projects this cache holds."""
    if content_type_json:
        data = {
            "meta": {"api-version": API_VERSION},
            "projects": [{"name": p} for p in projects],
        }
        return json.dumps(data, separators=(",", ":")).encode()
    links = "\n".join(f'<a href="{quote(p)}/">{html.escape(p)}</a><br />' for p in projects)
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        f'<meta name="pypi:repository-version" content="{API_VERSION}">\n'
        "<title>Simple index</title>\n</head>\n<body>\n"
        f"{links}\n</body>\n</html>\n"
    ).encode()

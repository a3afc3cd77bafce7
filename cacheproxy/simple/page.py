"""Project pages: read the upstream's JSON or HTML, rewrite file URLs, render JSON or HTML.

A page is kept in PEP 691 JSON form with every field the upstream sent, only file URLs
changed: they become relative, so every download comes back through the proxy. The upstream
URL of each file is kept beside the page, never shown to clients.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urldefrag, urljoin

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

from cacheproxy.simple.names import InvalidName, check_filename

API_VERSION = "1.1"
METADATA_SUFFIX = ".metadata"
PROVENANCE_SUFFIX = ".provenance"
_HASH_NAMES = ("sha256", "sha384", "sha512", "sha224", "sha1", "md5")


class PageError(ValueError):
    """An upstream page that cannot be understood."""


@dataclass
class ProjectPage:
    """A project's page as clients see it, plus where each file really lives."""

    data: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.data["name"]

    def file(self, filename: str) -> dict[str, Any] | None:
        for entry in self.data["files"]:
            if entry["filename"] == filename:
                return entry
        return None


@dataclass(frozen=True)
class FileSource:
    """Where to fetch a file from and what its bytes must hash to."""

    url: str
    hash_name: str | None
    hash_value: str | None
    size: int | None
    # A wheel the index gives no metadata for: the proxy extracts it once the wheel is cached.
    extract_metadata: bool = False


def best_hash(hashes: Any) -> tuple[str | None, str | None]:
    if isinstance(hashes, dict):
        for name in _HASH_NAMES:
            value = hashes.get(name)
            if isinstance(value, str) and value:
                return name, value.lower()
    return None, None


def find_source(page: ProjectPage, filename: str) -> FileSource | None:
    """The upstream source of a file or of a wheel's PEP 658 metadata, if the page has it."""
    entry = page.file(filename)
    if entry is not None:
        name, value = best_hash(entry.get("hashes"))
        size = entry.get("size")
        return FileSource(
            page.origins[filename],
            name,
            value,
            size if isinstance(size, int) else None,
            extract_metadata=filename.endswith(".whl") and not entry.get("core-metadata"),
        )
    if filename.endswith(PROVENANCE_SUFFIX) and filename in page.origins:
        return FileSource(page.origins[filename], None, None, None)
    if filename.endswith(METADATA_SUFFIX):
        base = filename[: -len(METADATA_SUFFIX)]
        entry = page.file(base)
        metadata = entry and entry.get("core-metadata")
        if metadata:
            name, value = best_hash(metadata)
            return FileSource(page.origins[base] + METADATA_SUFFIX, name, value, None)
    return None


def with_file_facts(page: ProjectPage, facts: dict[str, dict[str, Any]]) -> ProjectPage:
    """The page completed with what the proxy learned from files it cached: the size and
    upload time an HTML index does not state, and metadata extracted from wheels the index
    gives none for (so clients resolve without downloading or range-reading them)."""
    if not facts:
        return page
    files = []
    for entry in page.data["files"]:
        known = facts.get(entry["filename"])
        if known:
            entry = dict(entry)
            if "size" not in entry and "size" in known:
                entry["size"] = known["size"]
            if "upload-time" not in entry and "upload-time" in known:
                entry["upload-time"] = known["upload-time"]
            digest = known.get("metadata-sha256")
            if digest and not entry.get("core-metadata"):
                entry["core-metadata"] = entry["data-dist-info-metadata"] = {"sha256": digest}
        files.append(entry)
    return ProjectPage({**page.data, "files": files}, page.origins)


def _client_url(filename: str) -> str:
    return quote(filename, safe="")


def _metadata_field(value: Any) -> bool | dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return bool(value)


def _adopt_file(entry: dict[str, Any], page_url: str, origins: dict[str, str]) -> dict[str, Any]:
    """Rewrite one file entry for clients and record its upstream URL."""
    try:
        filename = check_filename(str(entry["filename"]))
        url = str(entry["url"])
    except (KeyError, InvalidName) as exc:
        raise PageError(f"unusable file entry in upstream page: {exc}") from None
    absolute, _ = urldefrag(urljoin(page_url, url))
    origins[filename] = absolute
    adopted = dict(entry)
    adopted["url"] = _client_url(filename)
    provenance = entry.get("provenance")
    if isinstance(provenance, str) and provenance:
        # PEP 740: the attestations come through the proxy like any file.
        origins[filename + PROVENANCE_SUFFIX] = urljoin(page_url, provenance)
        adopted["provenance"] = _client_url(filename + PROVENANCE_SUFFIX)
    adopted.setdefault("hashes", {})
    # PEP 714 renamed the key; serve both so old and new clients see the metadata.
    metadata = entry.get("core-metadata", entry.get("data-dist-info-metadata"))
    if metadata:
        adopted["core-metadata"] = adopted["data-dist-info-metadata"] = _metadata_field(metadata)
    else:
        adopted.pop("core-metadata", None)
        adopted.pop("data-dist-info-metadata", None)
    return adopted


def parse_json_page(body: bytes, page_url: str) -> ProjectPage:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PageError(f"upstream sent invalid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise PageError("upstream JSON page has no file list")
    if not isinstance(data.get("name"), str):
        raise PageError("upstream JSON page has no project name")
    origins: dict[str, str] = {}
    files = [_adopt_file(f, page_url, origins) for f in data["files"] if isinstance(f, dict)]
    page = dict(data)
    page["files"] = files
    page.setdefault("meta", {"api-version": API_VERSION})
    return ProjectPage(page, origins)


class _AnchorCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.meta: dict[str, list[str]] = {}
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []
        elif tag == "meta":
            values = dict(attrs)
            if values.get("name") and values.get("content") is not None:
                self.meta.setdefault(str(values["name"]), []).append(str(values["content"]))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None


def _html_metadata(value: str | None) -> bool | dict[str, str]:
    if value is None or value.lower() == "false":
        return False
    name, sep, digest = value.partition("=")
    return {name: digest} if sep and digest else True


def parse_html_page(body: bytes, page_url: str, project: str) -> ProjectPage:
    """A PEP 503 page turned into the PEP 691 JSON form, keeping every field JSON can hold."""
    collector = _AnchorCollector()
    try:
        collector.feed(body.decode("utf-8", errors="replace"))
        collector.close()
    except Exception as exc:  # html.parser raises assorted errors on garbage
        raise PageError(f"upstream sent unreadable HTML: {exc}") from None
    origins: dict[str, str] = {}
    files = []
    for attrs, text in collector.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url, fragment = urldefrag(href)
        filename = text or url.rstrip("/").rsplit("/", 1)[-1]
        hashes = {}
        hash_name, _, hash_value = fragment.partition("=")
        if hash_name and hash_value:
            hashes[hash_name.lower()] = hash_value.lower()
        entry: dict[str, Any] = {"filename": filename, "url": url, "hashes": hashes}
        if attrs.get("data-requires-python"):
            entry["requires-python"] = attrs["data-requires-python"]
        if "data-yanked" in attrs:
            entry["yanked"] = attrs["data-yanked"] or True
        metadata = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        if metadata is not None and _html_metadata(metadata):
            entry["core-metadata"] = _html_metadata(metadata)
        if "data-gpg-sig" in attrs:
            entry["gpg-sig"] = (attrs["data-gpg-sig"] or "").lower() == "true"
        if attrs.get("data-provenance"):
            entry["provenance"] = attrs["data-provenance"]
        files.append(_adopt_file(entry, page_url, origins))
    meta = collector.meta
    data: dict[str, Any] = {
        "meta": {"api-version": meta.get("pypi:repository-version", ["1.0"])[0]},
        "name": project,
        "files": files,
        "versions": versions_of(f["filename"] for f in files),
    }
    if "pypi:project-status" in meta:  # PEP 792
        status = {"status": meta["pypi:project-status"][0]}
        if "pypi:project-status-reason" in meta:
            status["reason"] = meta["pypi:project-status-reason"][0]
        data["project-status"] = status
    if "pypi:tracks" in meta:  # PEP 708
        data["tracks"] = meta["pypi:tracks"]
    if "pypi:alternate-locations" in meta:
        data["alternate-locations"] = meta["pypi:alternate-locations"]
    return ProjectPage(data, origins)


def versions_of(filenames: Iterable[str]) -> list[str]:
    """PEP 700 versions for an index that does not list them: read off the file names."""
    versions = set()
    for filename in filenames:
        try:
            if filename.endswith(".whl"):
                versions.add(parse_wheel_filename(filename)[1])
            else:
                versions.add(parse_sdist_filename(filename)[1])
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue
    return [str(v) for v in sorted(versions)]

"""Project pages: read the upstream's JSON or HTML, rewrite file URLs, render JSON or HTML.

A page is kept in PEP 691 JSON form with every field the upstream sent, only file URLs
changed: they become relative, so every download comes back through the proxy. The upstream
URL of each file is kept beside the page, never shown to clients.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

if TYPE_CHECKING:  # compact.py builds on this module
    from cacheproxy.protocol.compact import CompactPage

API_VERSION = "1.1"
METADATA_SUFFIX = ".metadata"
PROVENANCE_SUFFIX = ".provenance"  # a file's PEP 740 attestations, served beside it
_HASH_NAMES = ("sha256", "sha384", "sha512", "sha224", "sha1", "md5")


@dataclass
class ProjectPage:
    """A project's page as clients see it, plus where each file really lives."""

    data: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)
    # Why entries of the upstream page were left out, one line each, for the log; never
    # shown to clients. A class-level default, so pages stored before it still load.
    dropped: tuple[str, ...] = ()

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


def find_source(page: ProjectPage | CompactPage, filename: str) -> FileSource | None:
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
    upload time an HTML index does not state, and metadata for every wheel the index gives
    none for (PEP 658/714): its sha256 once the proxy has read it, `true` until then (the
    proxy reads it on request), so clients never download or range-read a wheel to resolve.
    A wheel whose metadata proved unreadable is left without."""
    files = [entry_with_facts(entry, facts.get(entry["filename"])) for entry in page.data["files"]]
    return ProjectPage({**page.data, "files": files}, page.origins)


def with_upstream_urls(page: ProjectPage) -> ProjectPage:
    """The page with each file's upstream URL (and its provenance's) where the proxy's own
    relative one was, without credentials: for clients that fetch files from the upstream's
    hosts themselves (the transparent face), so nothing they record names the proxy."""
    files = []
    for entry in page.data["files"]:
        entry = {**entry, "url": without_userinfo(page.origins[entry["filename"]])}
        provenance = page.origins.get(entry["filename"] + PROVENANCE_SUFFIX)
        if entry.get("provenance") and provenance is not None:
            entry["provenance"] = without_userinfo(provenance)
        files.append(entry)
    return ProjectPage({**page.data, "files": files}, page.origins)


def without_userinfo(url: str) -> str:
    """An absolute URL without the credentials an upstream may have put in it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def entry_with_facts(entry: dict[str, Any], known: dict[str, Any] | None) -> dict[str, Any]:
    """One file's entry as with_file_facts completes it; the entry itself when unchanged."""
    known = known or {}
    own = _own_metadata(entry, known)
    if not known and own is None:
        return entry
    entry = dict(entry)
    if "size" not in entry and "size" in known:
        entry["size"] = known["size"]
    if "upload-time" not in entry and "upload-time" in known:
        entry["upload-time"] = known["upload-time"]
    if own is not None:
        entry["core-metadata"] = entry["data-dist-info-metadata"] = own
    return entry


def _own_metadata(entry: dict[str, Any], known: dict[str, Any]) -> dict[str, str] | bool | None:
    """What to advertise for a file the upstream gives no metadata for; None: nothing."""
    if entry.get("core-metadata") or not entry["filename"].endswith(".whl"):
        return None
    digest = known.get("metadata-sha256")
    if digest:
        return {"sha256": digest}
    return None if known.get("metadata-unreadable") else True


def describe_dropped(dropped: tuple[str, ...], shown: int = 3) -> str:
    """One log line for the entries a page was parsed without: how many, and the first few."""
    more = f"; and {len(dropped) - shown} more" if len(dropped) > shown else ""
    return (
        f"{len(dropped)} entries left out of the upstream page: {'; '.join(dropped[:shown])}{more}"
    )


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

"""The file entries of an upstream page: each checked, rewritten for clients, and its
upstream URL recorded; an entry that cannot be used is left out with a one-line reason,
so one bad entry never costs the rest of the page."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urldefrag, urljoin

from cacheproxy.simple.filehosts import FileHosts
from cacheproxy.simple.names import InvalidName, check_filename

PROVENANCE_SUFFIX = ".provenance"


class _Unusable(Exception):
    """An entry the proxy cannot serve; the message is the reason, safe to log."""


@dataclass
class AdoptedFiles:
    files: list[dict[str, Any]] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def client_url(filename: str) -> str:
    return quote(filename, safe="")


def _metadata_field(value: Any) -> bool | dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return bool(value)


def _filename(entry: dict[str, Any], number: int) -> str:
    raw = entry.get("filename")
    if not isinstance(raw, str):
        raise _Unusable(f"entry {number} has no filename")
    try:
        return check_filename(raw)
    except InvalidName as exc:
        raise _Unusable(f"entry {number}: {exc}") from None


def _absolute(raw: str, page_url: str) -> str:
    """urldefrag(urljoin(page_url, raw)), without their cost for the usual absolute URL (a
    page can list thousands of files, and this runs for each while the GIL is held)."""
    if "#" in raw or "/." in raw:
        return urldefrag(urljoin(page_url, raw))[0]
    if raw.startswith(("https://", "http://")):
        return raw
    if raw.startswith("/") and not raw.startswith("//"):  # from the page's own origin
        end = page_url.find("/", page_url.find("://") + 3)
        if end > 0:
            return page_url[:end] + raw
    return urljoin(page_url, raw)


def _upstream_url(raw: Any, page_url: str, hosts: FileHosts) -> str:
    if not isinstance(raw, str) or not raw:
        raise _Unusable("no url")
    absolute = _absolute(raw, page_url)
    refusal = hosts.refusal(absolute)
    if refusal:
        raise _Unusable(refusal)
    return absolute


def _adopt(entry: Any, number: int, page_url: str, hosts: FileHosts, into: AdoptedFiles) -> None:
    """Rewrite one file entry for clients and record its upstream URL (and its provenance's)."""
    if not isinstance(entry, dict):
        raise _Unusable(f"entry {number} is not an object")
    filename = _filename(entry, number)
    if filename in into.origins:
        # An index never changes a file once published, so the first listing is the file;
        # keeping its URL with its own hash is what matters (clients see one entry per name).
        raise _Unusable(f"{filename!r} is listed again; the first listing is kept")
    try:
        origin = _upstream_url(entry.get("url"), page_url, hosts)
    except _Unusable as exc:
        raise _Unusable(f"{filename!r}: {exc}") from None
    adopted = dict(entry)
    adopted["url"] = client_url(filename)
    provenance = entry.get("provenance")
    if isinstance(provenance, str) and provenance:
        # PEP 740: the attestations come through the proxy like any file.
        try:
            into.origins[filename + PROVENANCE_SUFFIX] = _upstream_url(provenance, page_url, hosts)
            adopted["provenance"] = client_url(filename + PROVENANCE_SUFFIX)
        except _Unusable as exc:
            adopted["provenance"] = None
            into.dropped.append(f"{filename!r}: provenance left out: {exc}")
    adopted.setdefault("hashes", {})
    # PEP 714 renamed the key; serve both so old and new clients see the metadata.
    metadata = entry.get("core-metadata", entry.get("data-dist-info-metadata"))
    if metadata:
        adopted["core-metadata"] = adopted["data-dist-info-metadata"] = _metadata_field(metadata)
    else:
        adopted.pop("core-metadata", None)
        adopted.pop("data-dist-info-metadata", None)
    into.origins[filename] = origin
    into.files.append(adopted)


def adopt_files(entries: Iterable[Any], page_url: str, hosts: FileHosts) -> AdoptedFiles:
    """Every usable entry, rewritten; the others as reasons in dropped."""
    adopted = AdoptedFiles()
    for number, entry in enumerate(entries, 1):
        try:
            _adopt(entry, number, page_url, hosts, adopted)
        except _Unusable as exc:
            adopted.dropped.append(str(exc))
    return adopted

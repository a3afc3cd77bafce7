"""What the store keeps and hands out: an upstream document's body, validators and when it was
confirmed, a stored file as a lookup finds it, and the bytes a page is stored as.

Pages and JSON API documents share the freshness decision (`documents.states`), so they share
these fields: status, fetched_at, etag and last_modified.

A stored page is one JSON line with the entry's status and validators, then the page's compact
form (protocol/compact.py). No pickles: the stored form is the form held in memory, so a read is
a split and an index, and nothing in the store runs code when loaded. Entries pickled by earlier
versions still load, turned into the compact form.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from cacheproxy.protocol.compact import CompactPage, compact
from cacheproxy.protocol.page import ProjectPage


@dataclass
class CachedPage:
    """A project page as stored: the page (None for a project the upstream does not have),
    the upstream's validators, and when it was last confirmed."""

    status: int
    # Compact (its lines as stored) once read from or put in the store; expanded while fresh.
    page: ProjectPage | CompactPage | None
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class CachedDocument:
    """A JSON API document as stored: the upstream's data (None: it has no such document),
    its validators and when it was last confirmed. Read by the same policy functions as pages."""

    status: int
    data: dict[str, Any] | None
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class StoredFile:
    """A file in the store, as a lookup finds it: served by path."""

    path: str
    sha256: str
    size: int
    mtime: float | None = None  # when it was stored: its Last-Modified


def head_of(entry: CachedPage) -> CachedPage:
    """The entry's status and validators without its page, to keep beside a rendered copy."""
    return dataclasses.replace(entry, page=None)


# A stored page as bytes ----------------------------------------------------------------------

PAGE_FORMAT = "cacheproxy-page/1"


def encode_page(entry: CachedPage) -> bytes:
    head = {
        "format": PAGE_FORMAT,
        "status": entry.status,
        "fetched_at": entry.fetched_at,
        "etag": entry.etag,
        "last_modified": entry.last_modified,
    }
    line = json.dumps(head, separators=(",", ":")).encode()
    if entry.page is None:
        return line
    return line + b"\n" + compact(entry.page).body


def decode_page(value: object) -> CachedPage | None:
    """A stored value as an entry whose page is compact; None for what is not a page."""
    if isinstance(value, CachedPage):  # pickled before pages were stored as bytes
        page = None if value.page is None else compact(value.page)
        return dataclasses.replace(value, page=page)
    if not isinstance(value, bytes):
        return None
    head_end = value.find(b"\n")
    head = json.loads(value if head_end < 0 else value[:head_end])
    if head.get("format") != PAGE_FORMAT:
        return None
    page = None if head_end < 0 else CompactPage(value[head_end + 1 :])
    return CachedPage(
        status=head["status"],
        page=page,
        fetched_at=head["fetched_at"],
        etag=head["etag"],
        last_modified=head["last_modified"],
    )

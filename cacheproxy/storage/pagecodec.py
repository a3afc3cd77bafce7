"""Stored pages as bytes: one JSON line with the entry's status and validators, then the
page's compact form (simple/compact.py). No pickles: the stored form is the form held in
memory, so a read is a split and an index, and nothing in the store runs code when loaded.
Entries pickled by earlier versions still load, turned into the compact form."""

from __future__ import annotations

import dataclasses
import json

from cacheproxy.protocol.compact import CompactPage, compact
from cacheproxy.storage.records import CachedPage

FORMAT = "cacheproxy-page/1"


def encode(entry: CachedPage) -> bytes:
    head = {
        "format": FORMAT,
        "status": entry.status,
        "fetched_at": entry.fetched_at,
        "etag": entry.etag,
        "last_modified": entry.last_modified,
    }
    line = json.dumps(head, separators=(",", ":")).encode()
    if entry.page is None:
        return line
    return line + b"\n" + compact(entry.page).body


def decode(value: object) -> CachedPage | None:
    """A stored value as an entry whose page is compact; None for what is not a page."""
    if isinstance(value, CachedPage):  # pickled before pages were stored as bytes
        page = None if value.page is None else compact(value.page)
        return dataclasses.replace(value, page=page)
    if not isinstance(value, bytes):
        return None
    head_end = value.find(b"\n")
    head = json.loads(value if head_end < 0 else value[:head_end])
    if head.get("format") != FORMAT:
        return None
    page = None if head_end < 0 else CompactPage(value[head_end + 1 :])
    return CachedPage(
        status=head["status"],
        page=page,
        fetched_at=head["fetched_at"],
        etag=head["etag"],
        last_modified=head["last_modified"],
    )

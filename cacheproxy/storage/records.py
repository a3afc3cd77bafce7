"""What the store keeps of an upstream document: its body, validators and when it was confirmed.

Pages and JSON API documents share the freshness decision (`documents.states`), so they share
these fields: status, fetched_at, etag and last_modified.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cacheproxy.protocol.compact import CompactPage
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


def head_of(entry: CachedPage) -> CachedPage:
    """The entry's status and validators without its page, to keep beside a rendered copy."""
    return dataclasses.replace(entry, page=None)

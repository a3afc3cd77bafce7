"""Conditional and range requests (RFC 9110 sections 13 and 14), decided once for every file.

A stored file, one still downloading and one relayed uncached all go through `evaluate`, so a
client gets the same answer for the same request whatever state the file is in.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


class Outcome(enum.Enum):
    WHOLE = 200
    PARTIAL = 206
    NOT_MODIFIED = 304
    PRECONDITION_FAILED = 412
    UNSATISFIABLE = 416


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    start: int = 0
    end: int | None = None  # exclusive; None: to the end of a file of unknown length

    @property
    def status(self) -> int:
        return self.outcome.value


@dataclass(frozen=True)
class Validators:
    """What the client may compare against: a strong ETag (the sha256) and a modification time."""

    etag: str | None  # quoted, e.g. '"3b5d..."'
    last_modified: float | None  # seconds since the epoch


WHOLE = Decision(Outcome.WHOLE)


def _tags(header: str) -> list[tuple[bool, str]]:
    """(weak, opaque-tag) of each entity tag in a list header; '*' as ('*')."""
    tags = []
    for part in header.split(","):
        part = part.strip()
        weak = part.startswith("W/")
        tags.append((weak, part.removeprefix("W/")))
    return tags


def _matches(header: str, etag: str | None, *, strong: bool) -> bool:
    for weak, tag in _tags(header):
        if tag == "*":
            return True
        if etag is not None and tag == etag and not (strong and weak):
            return True
    return False


def _date(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # an invalid date is ignored, as RFC 9110 says


def _preconditions(headers: Mapping[str, str], method: str, v: Validators) -> Decision | None:
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _matches(if_match, v.etag, strong=True):
            return Decision(Outcome.PRECONDITION_FAILED)
    else:
        since = _date(headers.get("If-Unmodified-Since"))
        if since is not None and v.last_modified is not None and v.last_modified > since:
            return Decision(Outcome.PRECONDITION_FAILED)
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        if _matches(if_none_match, v.etag, strong=False):
            safe = method in ("GET", "HEAD")
            return Decision(Outcome.NOT_MODIFIED if safe else Outcome.PRECONDITION_FAILED)
    elif method in ("GET", "HEAD"):
        since = _date(headers.get("If-Modified-Since"))
        if since is not None and v.last_modified is not None and int(v.last_modified) <= since:
            return Decision(Outcome.NOT_MODIFIED)
    return None


def _if_range_holds(header: str | None, v: Validators) -> bool:
    if header is None:
        return True
    header = header.strip()
    if header.startswith(('"', "W/")):
        # A weak tag never matches here: a range needs byte-for-byte the same representation.
        return v.etag is not None and header == v.etag
    when = _date(header)
    return when is not None and v.last_modified is not None and int(v.last_modified) == when


def _byte_range(header: str, total: int) -> Decision:
    unit, _, spec = header.partition("=")
    spec = spec.strip()
    if unit.strip().lower() != "bytes" or not spec:
        return WHOLE
    if "," in spec:
        return WHOLE  # several ranges: the whole file is a valid answer and far simpler
    first, sep, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not sep or not (first.isdigit() or (first == "" and last.isdigit())):
        return WHOLE  # not a byte range we can read: ignored
    if last and not last.isdigit():
        return WHOLE
    if first == "":
        length = int(last)
        if length == 0 or total == 0:
            return Decision(Outcome.UNSATISFIABLE)
        return Decision(Outcome.PARTIAL, max(0, total - length), total)
    start = int(first)
    if last and int(last) < start:
        return WHOLE  # last before first: invalid, so ignored
    if start >= total:
        return Decision(Outcome.UNSATISFIABLE)
    end = int(last) + 1 if last else total
    return Decision(Outcome.PARTIAL, start, min(end, total))


def evaluate(
    method: str, headers: Mapping[str, str], validators: Validators, total: int | None
) -> Decision:
    """What to send: the whole file, a part of it, or a bodiless status."""
    early = _preconditions(headers, method, validators)
    if early is not None:
        return early
    range_header = headers.get("Range")
    if method != "GET" or not range_header or total is None:
        return WHOLE
    if not _if_range_holds(headers.get("If-Range"), validators):
        return WHOLE
    return _byte_range(range_header, total)

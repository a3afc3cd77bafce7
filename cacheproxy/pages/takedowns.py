"""Takedowns: files the upstream's current page no longer lists (deleted or quarantined
upstream) are no longer served and leave the cache. Yanked files are still listed (PEP 592),
so they are never taken down here."""

from __future__ import annotations

from cacheproxy.pages.rules import format_time
from cacheproxy.protocol.compact import filenames
from cacheproxy.storage.records import CachedPage


def _filenames(entry: CachedPage | None) -> set[str]:
    if entry is None or entry.page is None:
        return set()
    return filenames(entry.page)


def removed_files(old: CachedPage | None, new: CachedPage) -> list[str]:
    """What the stored page listed that the upstream's new answer does not (a project that is
    gone altogether takes all of its files with it)."""
    listed = _filenames(old)
    # A first fetch has nothing to take down: its page's thousands of names are not read.
    return sorted(listed - _filenames(new)) if listed else []


def base_filename(filename: str) -> str:
    """The distribution a .metadata or .provenance file belongs to."""
    return filename.removesuffix(".metadata").removesuffix(".provenance")


def taken_down_reason(filename: str, seen_at: float) -> str:
    return f"{filename} was removed upstream (gone from its page at {format_time(seen_at)})"

"""The file entries of an upstream page: each checked, rewritten for clients, and its
upstream URL recorded; an entry that cannot be used is left out with a one-line reason,
so one bad entry never costs the rest of the page."""

from __future__ import annotations

import re
from itertools import repeat
from typing import Any
from urllib.parse import quote, urldefrag, urljoin

from cacheproxy.errors import InvalidInput, InvalidName
from cacheproxy.protocol.filehosts import FileHosts
from cacheproxy.protocol.names import check_filename

PROVENANCE_SUFFIX = ".provenance"


class _Unusable(InvalidInput):
    """An entry the proxy cannot serve; the message is the reason, safe to log."""


class Adopter:
    """Adopts a page's entries one at a time, so each raw entry can be let go of as soon as
    its line is written (a page of thousands of files is megabytes of dictionaries). What is
    left out is told in `dropped`; provenance URLs are kept in `extra_origins`."""

    def __init__(self, page_url: str, hosts: FileHosts) -> None:
        self.page_url = page_url
        self.hosts = hosts
        self.dropped: list[str] = []
        self.extra_origins: dict[str, str] = {}
        self._seen: set[str] = set()

    def adopt(self, entry: Any, number: int) -> tuple[dict[str, Any], str] | None:
        """The entry rewritten for clients (the dictionary itself, changed in place) and its
        upstream URL; None when it cannot be used, with the reason in dropped."""
        try:
            return self._adopt(entry, number)
        except _Unusable as exc:
            self.dropped.append(str(exc))
            return None

    def _adopt(self, entry: Any, number: int) -> tuple[dict[str, Any], str]:
        if not isinstance(entry, dict):
            raise _Unusable(f"entry {number} is not an object")
        filename = _filename(entry, number)
        if filename in self._seen:
            # An index never changes a file once published, so the first listing is the file;
            # keeping its URL with its own hash is what matters (clients see one entry per
            # name).
            raise _Unusable(f"{filename!r} is listed again; the first listing is kept")
        try:
            origin = _upstream_url(entry.get("url"), self.page_url, self.hosts)
        except _Unusable as exc:
            raise _Unusable(f"{filename!r}: {exc}") from None
        entry["url"] = client_url(filename)
        self._adopt_fields(entry, filename)
        self._seen.add(filename)
        return entry, origin

    def _adopt_fields(self, entry: dict[str, Any], filename: str) -> None:
        """The fields past the name and URL: provenance, hashes, metadata."""
        if entry.get("provenance"):
            self._adopt_provenance(entry, filename)
        if "hashes" not in entry:
            entry["hashes"] = {}
        if "core-metadata" in entry or "data-dist-info-metadata" in entry:
            _adopt_metadata(entry)

    def _adopt_provenance(self, entry: dict[str, Any], filename: str) -> None:
        provenance = entry["provenance"]
        if isinstance(provenance, str):
            # PEP 740: the attestations come through the proxy like any file.
            try:
                url = _upstream_url(provenance, self.page_url, self.hosts)
                self.extra_origins[filename + PROVENANCE_SUFFIX] = url
                entry["provenance"] = client_url(filename + PROVENANCE_SUFFIX)
            except _Unusable as exc:
                entry["provenance"] = None
                self.dropped.append(f"{filename!r}: provenance left out: {exc}")

    def adopt_all(self, entries: list[Any]) -> tuple[list[str], list[str]] | None:
        """Every entry adopted as adopt() would, in one pass of each check over the page, for
        the usual page: every entry an object with a plain file name of its own and a URL on
        one origin the hosts allow. The entries are changed in place; their names and
        upstream URLs are returned. None for any other page, left as it was: adopt() each
        entry then. A page lists thousands of files, and the calls of one check per file
        cost more than the checks themselves."""
        count = len(entries)
        if not count or self._seen or set(map(type, entries)) != {dict}:
            return None
        # Any JSON values until the one pass over each just below shows them all strings.
        names: list[Any] = list(map(dict.get, entries, repeat("filename", count)))
        raws: list[Any] = list(map(dict.get, entries, repeat("url", count)))
        if set(map(type, names)) != {str} or set(map(type, raws)) != {str}:
            return None
        if len(set(names)) != count or not _PLAIN_NAMES.fullmatch("\n".join(names)):
            return None
        origins = self._origins_of(raws)
        if origins is None:
            return None
        for entry, filename in zip(entries, names, strict=True):
            entry["url"] = filename  # client_url() of a plain name
            self._adopt_fields(entry, filename)
        self._seen.update(names)
        return names, origins

    def _origins_of(self, raws: list[str]) -> list[str] | None:
        """The upstream URLs of raw URLs that are all absolute, or all rooted at the page's
        origin, with nothing _absolute() would resolve and all on one allowed origin."""
        joined = "".join(raws)
        if "#" in joined or "/." in joined:
            return None
        if raws[0].startswith("/"):
            root = _page_root(self.page_url)
            if root is None or not all(map(str.startswith, raws, repeat("/"))):
                return None
            if any(map(str.startswith, raws, repeat("//"))):
                return None
            absolute = [root + raw for raw in raws]
        else:
            absolute = raws
        return absolute if self.hosts.all_allowed(absolute) else None


# What quote() leaves as it is: most file names are made of these alone, and quote() costs
# more than the match for each of a page's thousands of files.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*")


# File names adopt_all() takes as they are, one per line: those check_filename() accepts that
# client_url() leaves as they are.
_PLAIN_NAME = r"[A-Za-z0-9_~-][A-Za-z0-9_.~-]{0,254}"
_PLAIN_NAMES = re.compile(rf"{_PLAIN_NAME}(?:\n{_PLAIN_NAME})*")


def _adopt_metadata(entry: dict[str, Any]) -> None:
    # PEP 714 renamed the key; serve both so old and new clients see the metadata.
    metadata = entry.get("core-metadata", entry.get("data-dist-info-metadata"))
    if metadata:
        field = _metadata_field(metadata)
        entry["core-metadata"] = entry["data-dist-info-metadata"] = field
    else:
        entry.pop("core-metadata", None)
        entry.pop("data-dist-info-metadata", None)


def client_url(filename: str) -> str:
    return filename if _UNQUOTED.fullmatch(filename) else quote(filename, safe="")


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
        root = _page_root(page_url)
        if root is not None:
            return root + raw
    return urljoin(page_url, raw)


def _page_root(page_url: str) -> str | None:
    """scheme://host[:port] of the page, that a URL rooted at "/" is resolved against."""
    end = page_url.find("/", page_url.find("://") + 3)
    return page_url[:end] if end > 0 else None


def _upstream_url(raw: Any, page_url: str, hosts: FileHosts) -> str:
    if not isinstance(raw, str) or not raw:
        raise _Unusable("no url")
    absolute = _absolute(raw, page_url)
    refusal = hosts.refusal(absolute)
    if refusal:
        raise _Unusable(refusal)
    return absolute

"""An upstream page read into the entries kept of it, in the compact form they are stored in:
PEP 691 JSON as it is, PEP 503 HTML's anchors turned into JSON entries. Pure: no I/O.

Every entry is checked and rewritten for clients (`Adopter`): its file name checked, its URL
made relative so every download comes back through the proxy, and its upstream URL, which must
be http(s) on a host the proxy may fetch files from (`FileHosts`), recorded beside it. An
entry that cannot be used is left out with a one-line reason, so one bad entry never costs the
rest of the page. Each entry's line is written as soon as it is read, so a page of thousands of
files is never held twice as dictionaries.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cached_property
from html.parser import HTMLParser
from itertools import repeat
from typing import Any
from urllib.parse import SplitResult, quote, urldefrag, urljoin, urlsplit

from cacheproxy.errors import InvalidInput, InvalidName, PageError
from cacheproxy.ops.redact import redact_url
from cacheproxy.protocol import render
from cacheproxy.protocol.compact import CompactBuilder, CompactPage, encode_texts
from cacheproxy.protocol.names import check_filename
from cacheproxy.protocol.page import API_VERSION, PROVENANCE_SUFFIX, ProjectPage, versions_of

# Where the proxy may fetch the files a page names --------------------------------------------
# http(s) URLs only, and, when host patterns are configured, only hosts that match one (the
# upstream's own origin always).

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHOWN_URL_CHARS = 100
_KNOWN_HEADS = 64


def _head(url: str) -> str:
    """The URL up to the first slash after its scheme's, which holds its whole origin; ""
    for a URL that is not http(s)."""
    start = 8 if url.startswith("https://") else 7 if url.startswith("http://") else 0
    end = url.find("/", start) if start else -1
    return url[: end + 1] if end > 0 else ""


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def _printable(text: str) -> bool:
    """str.isprintable(), told faster for ASCII text (a page's URLs, megabytes of them): a
    pass that deletes the printable bytes leaves nothing."""
    if text.isascii():
        return not text.encode("ascii").translate(None, _PRINTABLE_ASCII)
    return text.isprintable()


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or ""), parts.port or _DEFAULT_PORTS.get(scheme)


def shown_url(url: str) -> str:
    """A URL as a reason may quote it: no credentials, bounded, control characters escaped."""
    return repr(redact_url(url)[:_SHOWN_URL_CHARS])


@dataclass(frozen=True)
class FileHosts:
    """patterns: fnmatch patterns of host names (like *.example.org); none: any host.
    upstream: the index URL, whose origin is allowed whatever the patterns say."""

    patterns: tuple[str, ...] = ()
    upstream: str | None = None

    # scheme://netloc/ of URLs found fine: a page lists thousands of files from one or two
    # hosts, and the origin (all that is judged but the printable check) is the same for all.
    _allowed_heads: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def refusal(self, url: str) -> str | None:
        """Why a file may not be fetched from this absolute URL, or None when it may."""
        head = _head(url)
        if head in self._allowed_heads and url.isprintable():
            return None
        refused = self._refusal(url)
        if refused is None and head and len(self._allowed_heads) < _KNOWN_HEADS:
            self._allowed_heads[head] = True
        return refused

    def all_allowed(self, urls: list[str]) -> bool:
        """Whether refusal() is None for every one of these URLs, when they share the first
        one's origin and are printable: told with one full check. False otherwise, whether or
        not they are allowed: ask refusal() of each then."""
        head = _head(urls[0]) if urls else ""
        if not head or self.refusal(urls[0]) is not None:
            return False
        return _printable("".join(urls)) and all(map(str.startswith, urls, repeat(head)))

    def _refusal(self, url: str) -> str | None:
        try:
            parts = urlsplit(url)
            origin = _origin(parts)
        except ValueError:  # a bad port or IPv6 literal
            return f"URL {shown_url(url)} cannot be parsed"
        if origin[0] not in _DEFAULT_PORTS:
            return f"URL {shown_url(url)} is not http(s)"
        if not origin[1]:
            return f"URL {shown_url(url)} has no host"
        if not url.isprintable():
            return f"URL {shown_url(url)} has control characters"
        if not self.patterns or self._is_upstream(origin):
            return None
        if any(fnmatchcase(origin[1], pattern.lower()) for pattern in self.patterns):
            return None
        return f"file host {origin[1]!r} is not among the allowed file hosts"

    @cached_property
    def _upstream_origin(self) -> tuple[str, str, int | None] | None:
        return None if self.upstream is None else _origin(urlsplit(self.upstream))

    def _is_upstream(self, origin: tuple[str, str, int | None]) -> bool:
        return origin == self._upstream_origin


ANY_HOST = FileHosts()


# The entries of a page: each checked, rewritten for clients, its upstream URL recorded --------


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


# A PEP 503 HTML page read into entries shaped like PEP 691 JSON ones, and its meta tags --------
# Every anchor becomes an entry, href or not: whether it is usable is decided by the Adopter,
# as for JSON entries.


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


def html_entries(body: bytes) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """The page's anchors as file entries, and its meta tags by name; html.parser raises
    assorted errors on garbage."""
    collector = _AnchorCollector()
    collector.feed(body.decode("utf-8", errors="replace"))
    collector.close()
    entries = []
    for attrs, text in collector.anchors:
        url, fragment = urldefrag(attrs.get("href") or "")
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
        entries.append(entry)
    return entries, collector.meta


# The page ----------------------------------------------------------------------------------


def _adopted(
    entries: list[Any], adopter: Adopter, served: list[bytes] | None = None, floats: bool = True
) -> CompactBuilder:
    """The entries adopted into a builder; served, when given, gets each entry as a client is
    served it while nothing is known of the files. floats: False when no entry holds one."""
    builder = CompactBuilder()
    every = adopter.adopt_all(entries)
    if every is not None:
        names, origins = every
        texts = encode_texts(entries, floats)
        wanting = None if served is None else render.wants_metadata_true(entries, names)
        entries.clear()  # megabytes of dictionaries for a large page: gone before its lines
        builder.add_texts(names, texts, origins)
        if served is not None and wanting is not None:
            served += render.served_texts(texts, wanting)
        return builder
    for number in range(len(entries)):
        entry, entries[number] = entries[number], None  # let go of it once its line is out
        adopted = adopter.adopt(entry, number + 1)
        if adopted is not None:
            line = builder.add(*adopted)
            if served is not None:
                adopted_entry = adopted[0]
                filename = adopted_entry["filename"]
                served.append(render.served_entry(filename, line, entry=adopted_entry))
    return builder


def parse_json(body: bytes, page_url: str, hosts: FileHosts = ANY_HOST) -> CompactPage:
    """A PEP 691 page; entries that cannot be used are left out, their reasons in dropped."""
    return parse_json_served(body, page_url, hosts, served=False)[0]


def parse_json_served(
    body: bytes, page_url: str, hosts: FileHosts = ANY_HOST, *, served: bool = True
) -> tuple[CompactPage, bytes | None]:
    """parse_json, and the page's JSON as render_compact_json(page, {}) renders it, made as
    the entries are read: a cold page's first render would go through them all again."""
    floats = False

    def read_float(text: str) -> float:  # NaN and Infinity too
        nonlocal floats
        floats = True
        return float(text)

    try:
        # Whether the page holds a float at all, told as it is read: most pages hold none.
        data = json.loads(body, parse_float=read_float, parse_constant=read_float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PageError(f"upstream sent invalid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise PageError("upstream JSON page has no file list")
    if not isinstance(data.get("name"), str):
        raise PageError("upstream JSON page has no project name")
    entries = data.pop("files")
    data.setdefault("meta", {"api-version": API_VERSION})
    adopter = Adopter(page_url, hosts)
    parts: list[bytes] | None = [] if served else None
    builder = _adopted(entries, adopter, parts, floats)
    page = builder.page(data, adopter.extra_origins, tuple(adopter.dropped))
    return page, None if parts is None else render.joined_json(page.head_json(), parts)


def parse_html(
    body: bytes, page_url: str, project: str, hosts: FileHosts = ANY_HOST
) -> CompactPage:
    """A PEP 503 page turned into the PEP 691 JSON form, keeping every field JSON can hold;
    anchors that cannot be used are left out, their reasons in dropped."""
    try:
        entries, meta = html_entries(body)
    except Exception as exc:  # html.parser raises assorted errors on garbage
        raise PageError(f"upstream sent unreadable HTML: {exc}") from None
    adopter = Adopter(page_url, hosts)
    builder = _adopted(entries, adopter, floats=False)  # attributes are strings
    head: dict[str, Any] = {
        "meta": {"api-version": meta.get("pypi:repository-version", ["1.0"])[0]},
        "name": project,
        "versions": versions_of(builder.names),
    }
    if "pypi:project-status" in meta:  # PEP 792
        status = {"status": meta["pypi:project-status"][0]}
        if "pypi:project-status-reason" in meta:
            status["reason"] = meta["pypi:project-status-reason"][0]
        head["project-status"] = status
    if "pypi:tracks" in meta:  # PEP 708
        head["tracks"] = meta["pypi:tracks"]
    if "pypi:alternate-locations" in meta:
        head["alternate-locations"] = meta["pypi:alternate-locations"]
    return builder.page(head, adopter.extra_origins, tuple(adopter.dropped))


def expanded(page: CompactPage) -> ProjectPage:
    """A parsed page as dictionaries, with what was left out of it."""
    return dataclasses.replace(page.expand(), dropped=page.dropped)


def parse_json_page(body: bytes, page_url: str, hosts: FileHosts = ANY_HOST) -> ProjectPage:
    """parse_json, expanded."""
    return expanded(parse_json(body, page_url, hosts))


def parse_html_page(
    body: bytes, page_url: str, project: str, hosts: FileHosts = ANY_HOST
) -> ProjectPage:
    """parse_html, expanded."""
    return expanded(parse_html(body, page_url, project, hosts))

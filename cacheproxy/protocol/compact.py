"""A project page held as compact bytes, the form it is stored in, read one file at a time.

A parsed page of thousands of files is thousands of dictionaries (numpy's: about 5.7 MB of
Python objects for 1.4 MB of JSON), and every request that held its own copy held all of
them. A CompactPage keeps the page as bytes plus an index from file name to the line that
describes it: finding a file's source decodes one short line, and the whole page is expanded
only to render it (briefly, in a worker thread, a bounded number at once: cache/pages.py).

The bytes are lines of canonical JSON (JSON never holds a raw newline or tab):

    line 0: the page data without "files"
    line 1: origins that are not a listed file's own (provenance files), {name: url}
    line 2: the file names, in page order
    then one line per file: its entry, a tab, its origin

The one JSON pages are stored and served in is made here too: compact separators, UTF-8 as it
is (json.dumps with separators=(",", ":") and ensure_ascii=False), one line per value. A page's
entries are encoded by orjson where its bytes are those, the standard library's encoder
otherwise (encode_json, encode_texts, encode_strings; render.py serves in the same JSON).
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from cacheproxy.protocol.page import ProjectPage

# The canonical JSON ------------------------------------------------------------------------

# Made once: JSONEncoder.encode makes a new C encoder per call, which cost more than the
# encoding of a file's entry, and a page of thousands of files is thousands of calls. The C
# encoder is the one json.dumps itself uses; _ENCODE is for the rest (and where there is no C
# accelerator).
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_ENCODE_STRING = json.encoder.encode_basestring  # ensure_ascii=False's


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C accelerator's factory is not in the standard library's type stubs.
_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_ENCODE_OBJECT = (
    None
    if _MAKE_ENCODER is None
    else _MAKE_ENCODER(None, _not_json, _ENCODE_STRING, None, ":", ",", False, False, True)
)


def encode_json(value: Any) -> bytes:
    """A value as one line of the canonical JSON pages are stored and served in."""
    if _ENCODE_OBJECT is not None and type(value) is dict:
        return "".join(_ENCODE_OBJECT(value, 0)).encode()
    return _ENCODE(value).encode()


def encode_texts(entries: list[dict[str, Any]], floats: bool = True) -> list[bytes]:
    """encode_json() of each entry. Entries without a float among them (floats: False) are
    encoded by one call of orjson for them all, whose bytes are then json.dumps's, in a third
    of the standard library's time for a page of thousands of files."""
    if not floats:
        inner = _orjson_inner(entries, b"},{")
        if inner is not None:
            return [b"{" + part + b"}" for part in inner]
    return list(map(encode_json, entries))


def encode_strings(strings: list[str]) -> list[bytes]:
    """encode_json() of each string."""
    inner = _orjson_inner(strings, b'","')
    if inner is None:
        return list(map(encode_json, strings))
    return [b'"' + part + b'"' for part in inner]


def _orjson_inner(values: list[Any], between: bytes) -> list[bytes] | None:
    """orjson's encoding of a non-empty list of dicts or strings, less its brackets, cut where
    `between` parts two of them (b"},{" for dicts, b'","' for strings), each less the outer
    character on either side; None when it is not orjson's to write (a number past 64 bits, a
    lone surrogate) or when `between` shows inside a value too. A single orjson.dumps() of
    each value would not do: each result keeps a 4 KB buffer."""
    if not values:
        return None
    try:
        joined = orjson.dumps(values)
    except orjson.JSONEncodeError:
        return None
    inner = joined[2:-2].split(between)
    # The values' own boundaries make len(values) parts; any more is `between` in a value.
    return inner if len(inner) == len(values) else None


# The compact page --------------------------------------------------------------------------

# What the index costs per file beside the bytes: a hash, a position, a line start.
_INDEX_BYTES_PER_FILE = 20


class CompactBuilder:
    """A CompactPage written one file at a time, so whoever adds them can let go of each
    entry as soon as it is added."""

    def __init__(self) -> None:
        self._lines = bytearray()
        self.names: list[str] = []

    def add(self, entry: dict[str, Any], origin: str) -> bytes:
        """Add a file's entry; its line's JSON is returned for whoever renders it too."""
        line = encode_json(entry)
        self._lines += b"\n" + line + b"\t" + encode_json(origin)
        self.names.append(entry["filename"])
        return line

    def add_texts(self, names: list[str], texts: list[bytes], origins: list[str]) -> None:
        """add() of many files at once, from their entries' JSON (encode_texts)."""
        lines = map(b"\t".join, zip(texts, encode_strings(origins), strict=True))
        self._lines += b"\n"
        self._lines += b"\n".join(lines)
        self.names += names

    def page(
        self, head: dict[str, Any], origins: Mapping[str, str], dropped: tuple[str, ...] = ()
    ) -> CompactPage:
        """The page with this head (its data without "files"); origins may hold more than
        the listed files' own (provenance files), which are kept beside them."""
        listed = set(self.names)
        extra = {name: url for name, url in origins.items() if name not in listed}
        lines = self._lines if self.names else b"\n"
        body = b"\n".join([encode_json(head), encode_json(extra), encode_json(self.names)]) + lines
        return CompactPage(body, dropped)


class CompactPage:
    """A page's bytes and where each file's line starts; answers what ProjectPage answers to
    find a file's source (`name`, `file`, `origins`), and `expand()` gives the whole page."""

    __slots__ = (
        "body", "name", "dropped", "_count", "_hashes", "_positions", "_names", "_starts",
        "_extra_origins",
    )  # fmt: skip

    def __init__(self, body: bytes, dropped: tuple[str, ...] = ()) -> None:
        self.body = body
        self.dropped = dropped  # as ProjectPage.dropped: for the log, never stored
        data_end = body.index(b"\n")
        extra_end = body.index(b"\n", data_end + 1)
        names_end = body.index(b"\n", extra_end + 1)
        self.name: str = json.loads(body[:data_end])["name"]
        self._extra_origins: dict[str, str] = json.loads(body[data_end + 1 : extra_end])
        self._names = (extra_end + 1, names_end)
        names = json.loads(body[extra_end + 1 : names_end])
        self._count = len(names)
        # The index is the names' hashes, sorted, and where each name's line is: 20 bytes a
        # file. A dictionary of the names themselves was 150 bytes a file, and its thousands
        # of small strings, made amid a parse's short-lived objects, kept the heap from
        # shrinking after it.
        hashes = [hash(name) for name in names]
        order = sorted(range(len(names)), key=hashes.__getitem__)
        self._hashes = array("q", [hashes[i] for i in order])
        self._positions = array("I", order)
        starts = array("Q", [names_end + 1])
        for _ in range(len(names)):
            starts.append(body.find(b"\n", starts[-1]) + 1 or len(body) + 1)
        self._starts = starts

    def _find(self, filename: str) -> tuple[int, dict[str, Any]] | None:
        """The position and entry of a listed file; names of one hash are told apart by the
        name in their entry."""
        digest = hash(filename)
        k = bisect_left(self._hashes, digest)
        while k < self._count and self._hashes[k] == digest:
            i = self._positions[k]
            entry = json.loads(self._parts(i)[0])
            if entry.get("filename") == filename:
                return i, entry
            k += 1
        return None

    def names(self) -> list[str]:
        """The file names, in page order."""
        return json.loads(self.body[self._names[0] : self._names[1]])

    @classmethod
    def of(cls, page: ProjectPage) -> CompactPage:
        builder = CompactBuilder()
        for entry in page.data.get("files", []):
            builder.add(entry, page.origins[entry["filename"]])
        head = {key: value for key, value in page.data.items() if key != "files"}
        return builder.page(head, page.origins, page.dropped)

    def _parts(self, i: int) -> tuple[bytes, bytes]:
        """The entry and the origin of the i-th file, as JSON."""
        line = self.body[self._starts[i] : self._starts[i + 1] - 1]
        tab = line.rindex(b"\t")
        return line[:tab], line[tab + 1 :]

    def file(self, filename: str) -> dict[str, Any] | None:
        found = self._find(filename)
        return None if found is None else found[1]

    def origin(self, filename: str) -> str | None:
        found = self._find(filename)
        if found is None:
            return self._extra_origins.get(filename)
        return json.loads(self._parts(found[0])[1])

    def lists(self, filename: str) -> bool:
        return self._find(filename) is not None

    @property
    def origins(self) -> Mapping[str, str]:
        return _Origins(self)

    @property
    def files(self) -> Mapping[str, dict[str, Any]]:
        """filename -> entry, each entry decoded when it is looked up."""
        return _Files(self)

    def __len__(self) -> int:
        """The number of files."""
        return self._count

    @property
    def weight(self) -> int:
        """About how many bytes this page holds in memory."""
        return len(self.body) + _INDEX_BYTES_PER_FILE * self._count

    def head_json(self) -> bytes:
        """The page data without "files", as JSON."""
        return self.body[: self.body.index(b"\n")]

    def entries_json(self) -> Iterator[tuple[str, bytes]]:
        """Each file's name and entry as JSON, in page order."""
        for i, name in enumerate(self.names()):
            yield name, self._parts(i)[0]

    def expand(self) -> ProjectPage:
        """The whole page as dictionaries, for rendering: CPU work, run it in a thread."""
        data = json.loads(self.body[: self.body.index(b"\n")])
        parts = [self._parts(i) for i in range(self._count)]
        data["files"] = json.loads(b"[" + b",".join(entry for entry, _ in parts) + b"]")
        urls = json.loads(b"[" + b",".join(origin for _, origin in parts) + b"]")
        origins = dict(self._extra_origins)
        origins.update(zip(self.names(), urls, strict=True))
        return ProjectPage(data, origins)


class _Files(Mapping[str, dict[str, Any]]):
    def __init__(self, page: CompactPage) -> None:
        self._page = page

    def __getitem__(self, filename: str) -> dict[str, Any]:
        entry = self._page.file(filename)
        if entry is None:
            raise KeyError(filename)
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(self._page.names())

    def __len__(self) -> int:
        return len(self._page)


class _Origins(Mapping[str, str]):
    """filename -> upstream URL, read from the page's lines as asked."""

    def __init__(self, page: CompactPage) -> None:
        self._page = page

    def __getitem__(self, filename: str) -> str:
        origin = self._page.origin(filename)
        if origin is None:
            raise KeyError(filename)
        return origin

    def __contains__(self, filename: object) -> bool:
        page = self._page
        if not isinstance(filename, str):
            return False
        return filename in page._extra_origins or page.lists(filename)

    def __iter__(self) -> Iterator[str]:
        yield from self._page.names()
        yield from self._page._extra_origins

    def __len__(self) -> int:
        return len(self._page) + len(self._page._extra_origins)


def compact(page: ProjectPage | CompactPage) -> CompactPage:
    return page if isinstance(page, CompactPage) else CompactPage.of(page)


def expand(page: ProjectPage | CompactPage) -> ProjectPage:
    return page.expand() if isinstance(page, CompactPage) else page


def filenames(page: ProjectPage | CompactPage) -> set[str]:
    """The names of the files a page lists, without expanding a compact one."""
    if isinstance(page, CompactPage):
        return set(page.names())
    return {entry["filename"] for entry in page.data["files"]}

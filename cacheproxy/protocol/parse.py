"""Upstream pages read into the compact form they are kept in: PEP 691 JSON as it is, PEP 503
HTML turned into the JSON form. Every entry is checked and rewritten (simple/entries.py) and
its line written as soon as it is read, so a page of thousands of files is never held twice
as dictionaries. Pure: no I/O."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from cacheproxy.errors import PageError
from cacheproxy.protocol import render
from cacheproxy.protocol.anchors import html_entries
from cacheproxy.protocol.compact import CompactBuilder, CompactPage, encode_texts
from cacheproxy.protocol.entries import Adopter
from cacheproxy.protocol.filehosts import ANY_HOST, FileHosts
from cacheproxy.protocol.page import API_VERSION, ProjectPage, versions_of


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

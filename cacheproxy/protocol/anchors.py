"""A PEP 503 HTML page read into file entries shaped like PEP 691 JSON ones, and its meta tags.

Every anchor becomes an entry, href or not: whether it is usable is decided with the JSON
entries, in one place (cacheproxy.protocol.entries).
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag


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

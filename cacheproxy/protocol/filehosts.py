"""Where the proxy may fetch the files an upstream page names: http(s) URLs only, and, when
host patterns are configured, only hosts that match one (the upstream's own origin always)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cached_property
from itertools import repeat
from urllib.parse import SplitResult, urlsplit

from cacheproxy.ops.redact import redact_url

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

"""HEAD and small Ranges on a file not cached yet, answered without downloading it.

Resolvers range-read wheels: a HEAD for the length, then the tail, then a small span. None of
that needs the whole file, so none of it starts the download; the download starts when a
client asks for the whole file. Every decision still goes through `ranges.evaluate`, against
the same validators a running download would give, so the answer does not depend on the
file's state.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from cacheproxy.documents.singleflight import SingleFlight
from cacheproxy.errors import UpstreamError
from cacheproxy.files.answers import Answer, AnswerFields, FileAnswer, FileRequest, InMemory
from cacheproxy.files.ranges import Outcome, Validators, evaluate
from cacheproxy.files.relay import fetch_range
from cacheproxy.protocol.page import FileSource
from cacheproxy.upstream import Upstream

log = logging.getLogger(__name__)

# Lengths learned by an upstream HEAD, by URL (files are immutable): enough for a resolution
# of a few thousand files, small enough not to matter.
_KNOWN_LENGTHS = 4096


@dataclass(frozen=True)
class Probe:
    """What the proxy knows of a file without holding it."""

    total: int


def expected_etag(source: FileSource) -> str | None:
    """The ETag the file will have once stored: its sha256, when the index states it."""
    return f'"{source.hash_value}"' if source.hash_name == "sha256" else None


class ColdFiles:
    def __init__(self, upstream: Upstream, range_limit: int) -> None:
        self.upstream = upstream
        self.range_limit = range_limit
        self._flights: SingleFlight[object] = SingleFlight()
        self._lengths: OrderedDict[str, int] = OrderedDict()

    async def probe(self, source: FileSource) -> Probe | None:
        """The file's length: the page's size, else one upstream HEAD shared by all who ask;
        None when neither says."""
        if source.size is not None:
            return Probe(source.size)
        known = self._lengths.get(source.url)
        if known is None:
            found = await self._flights.run(("head", source.url), lambda: self._head(source.url))
            if not isinstance(found, int):
                return None
            known = found
            self._lengths[source.url] = known
            if len(self._lengths) > _KNOWN_LENGTHS:
                self._lengths.popitem(last=False)
        return Probe(known)

    async def _head(self, url: str) -> int | None:
        try:
            async with self.upstream.open_file(url, method="HEAD") as body:
                if body.status != 200:
                    return None
                return body.content_length
        except UpstreamError as exc:
            log.info("HEAD of %s failed: %s", url, exc)
            return None

    async def answer(
        self, source: FileSource, filename: str, request: FileRequest
    ) -> FileAnswer | None:
        """A HEAD, a bodiless status or a small range of a cold file; None when the request
        needs the download (the whole file, a large range, an upstream that will not say)."""
        method = request.method
        if method not in ("GET", "HEAD") or (method == "GET" and "Range" not in request.headers):
            return None
        probe = await self.probe(source)
        if probe is None:
            return None
        validators = Validators(expected_etag(source), None)
        decision = evaluate(method, request.headers, validators, probe.total)
        common: AnswerFields = dict(filename=filename, decision=decision, total=probe.total)
        if method == "HEAD" or decision.outcome not in (Outcome.WHOLE, Outcome.PARTIAL):
            return Answer("cold-head", **common, etag=validators.etag)
        if decision.outcome is Outcome.WHOLE or decision.end is None:
            return None
        start, end = decision.start, decision.end
        if end - start > self.range_limit:
            return None
        key = ("range", source.url, start, end)
        joined = self._flights.is_running(key)
        data = await self._flights.run(
            key, lambda: fetch_range(self.upstream, source.url, start, end)
        )
        if not isinstance(data, bytes):
            return None  # the upstream would not give the range: the download will
        outcome = "coalesced-range" if joined else "miss-range"
        return InMemory(outcome, **common, etag=validators.etag, data=data)

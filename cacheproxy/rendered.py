"""Hot project pages kept rendered, hashed and compressed in memory.

Rendering a large page (thousands of files) to JSON, hashing it for the ETag and compressing it
costs milliseconds of CPU; an install asks for the same pages again and again. A rendered page
is reused while the stored page it came from is fresh and unchanged (the store's page version),
so a warm page costs a dictionary lookup. Bounded by bytes, least recently used first out.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
from dataclasses import dataclass

from cacheproxy.policy import CachedPage
from cacheproxy.singleflight import SingleFlight

MAX_BYTES = 32 * 1024 * 1024
GZIP_MIN_BYTES = 1024


@dataclass(frozen=True)
class RenderedPage:
    head: CachedPage  # the stored entry's status and validators, without the parsed page
    version: int  # the store's page version it was rendered from
    etag: str
    body: bytes
    gzipped: bytes | None  # None for bodies too small to be worth compressing

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"")


def render_variants(entry: CachedPage, version: int, body: bytes) -> RenderedPage:
    """ETag and gzip of a freshly rendered body: CPU work, run it in a thread."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:40] + '"'
    gzipped = gzip.compress(body, 6) if len(body) >= GZIP_MIN_BYTES else None
    head = dataclasses.replace(entry, page=None)
    return RenderedPage(head, version, etag, body, gzipped)


class RenderedPages:
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._pages: collections.OrderedDict[tuple[str, str], RenderedPage] = (
            collections.OrderedDict()
        )
        self._bytes = 0
        self.flights: SingleFlight[tuple[RenderedPage | None, object]] = SingleFlight()

    def get(self, project: str, content_type: str, version: int) -> RenderedPage | None:
        key = (project, content_type)
        page = self._pages.get(key)
        if page is None or page.version != version:
            return None
        self._pages.move_to_end(key)
        return page

    def put(self, project: str, content_type: str, page: RenderedPage) -> None:
        key = (project, content_type)
        old = self._pages.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        if page.size > self.max_bytes // 4:
            return  # one giant page must not push out everything else
        self._pages[key] = page
        self._bytes += page.size
        while self._bytes > self.max_bytes:
            _, evicted = self._pages.popitem(last=False)
            self._bytes -= evicted.size

    def __len__(self) -> int:
        return len(self._pages)

"""Hot project pages kept rendered, hashed and compressed in memory.

Rendering a large page (thousands of files) to JSON, hashing it for the ETag and compressing it
costs milliseconds of CPU; an install asks for the same pages again and again. A rendered page
is reused while the stored page it came from is fresh and unchanged (the store's page version),
so a warm page costs a dictionary lookup. Bounded by bytes.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from dataclasses import dataclass

from cacheproxy.cache.policy import CachedPage
from cacheproxy.cache.singleflight import SingleFlight
from cacheproxy.cache.versioned import VersionedCache

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
        self._pages: VersionedCache[tuple[str, str], RenderedPage] = VersionedCache(
            max_bytes, lambda page: page.size
        )
        self.flights: SingleFlight[tuple[RenderedPage | None, object]] = SingleFlight()

    def get(self, project: str, content_type: str, version: int) -> RenderedPage | None:
        return self._pages.get((project, content_type), version)

    def put(self, project: str, content_type: str, page: RenderedPage) -> None:
        self._pages.put((project, content_type), page.version, page)

    def __len__(self) -> int:
        return len(self._pages)

"""Recently used project pages kept parsed in memory.

A cold install asks about each wheel three or four times (HEAD, a tail range or two, the
download), and every one of those needs the project's page to know where the file lives and
what it must hash to. Unpickling a large stored page (thousands of files) holds the GIL for
tens of milliseconds, so the pages in use are kept, each tied to the store's page version it
was read at. Bounded by the number of file entries they hold.
"""

from __future__ import annotations

from cacheproxy.cache.policy import CachedPage
from cacheproxy.cache.versioned import VersionedCache

MAX_FILES = 20_000


def _weight(entry: CachedPage) -> int:
    # A page without files (a 404, an empty project) still takes a slot.
    return 1 + (len(entry.page.data.get("files", ())) if entry.page is not None else 0)


class ParsedPages(VersionedCache[str, CachedPage]):
    def __init__(self, max_files: int = MAX_FILES) -> None:
        super().__init__(max_files, _weight)

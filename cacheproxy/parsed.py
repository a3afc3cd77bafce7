"""Recently used project pages kept parsed in memory.

A cold install asks about each wheel three or four times (HEAD, a tail range or two, the
download), and every one of those needs the project's page to know where the file lives and
what it must hash to. Unpickling a large stored page (thousands of files) holds the GIL for
tens of milliseconds, so the pages in use are kept, each tied to the store's page version it
was read at. Bounded by the number of file entries they hold, least recently used first out.
"""

from __future__ import annotations

import collections

from cacheproxy.policy import CachedPage

MAX_FILES = 20_000


def _weight(entry: CachedPage) -> int:
    # A page without files (a 404, an empty project) still takes a slot.
    return 1 + (len(entry.page.data.get("files", ())) if entry.page is not None else 0)


class ParsedPages:
    def __init__(self, max_files: int = MAX_FILES) -> None:
        self.max_files = max_files
        self._pages: collections.OrderedDict[str, tuple[int, CachedPage]] = (
            collections.OrderedDict()
        )
        self._files = 0

    def get(self, project: str, version: int) -> CachedPage | None:
        held = self._pages.get(project)
        if held is None or held[0] != version:
            return None
        self._pages.move_to_end(project)
        return held[1]

    def put(self, project: str, version: int, entry: CachedPage) -> None:
        old = self._pages.pop(project, None)
        if old is not None:
            self._files -= _weight(old[1])
        weight = _weight(entry)
        if weight > self.max_files // 4:
            return  # one giant project must not push out everything else
        self._pages[project] = (version, entry)
        self._files += weight
        while self._files > self.max_files:
            _, (_, evicted) = self._pages.popitem(last=False)
            self._files -= _weight(evicted)

    def __len__(self) -> int:
        return len(self._pages)

"""Wheel tails read for their metadata, kept so the wheel's download need not fetch them again.

A resolver asks for a wheel's metadata, which the proxy reads from the wheel's last tens of
kilobytes (tailmeta.py); an installer then asks for the whole wheel. The tail is written where
it belongs in a sparse staging file, and the download that starts later adopts that file and
asks the upstream only for the bytes before it: on a cold install of a set that is about 3 %
fewer upstream bytes. The download still hashes every byte, so a tail that no longer matches
the upstream's file fails the check like any corrupt transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cacheproxy.files.download import write_at

# Each is one small staging file: enough for the wheels of a large resolution, few enough
# that wheels resolved but never installed do not pile up.
KEPT_TAILS = 512


@dataclass(frozen=True)
class KeptTail:
    """A staging file holding a wheel's bytes from `start` to its end, `total`."""

    path: Path
    start: int
    total: int


class KeptTails:
    def __init__(self, new_path: Callable[[], Path], limit: int = KEPT_TAILS) -> None:
        self._new_path = new_path
        self.limit = limit  # tails kept at most; the oldest goes first
        self._kept: OrderedDict[tuple[str, str], KeptTail] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def __iter__(self) -> Iterator[KeptTail]:
        """The tails kept, oldest first."""
        return iter(list(self._kept.values()))

    async def keep(self, key: tuple[str, str], start: int, data: bytes) -> None:
        """Keep `data`, the bytes of the file `key` from `start` to its end."""
        if key in self._kept or not data:
            return
        path = self._new_path()
        try:
            await asyncio.to_thread(_write_sparse, path, start, data)
        except OSError:  # only a saving lost: the download fetches the tail again
            return
        self._kept[key] = KeptTail(path, start, start + len(data))
        while len(self._kept) > self.limit:
            _, oldest = self._kept.popitem(last=False)
            discard_quietly(oldest.path)

    def take(self, key: tuple[str, str]) -> KeptTail | None:
        """The kept tail of `key`, now the caller's (its file included), or None."""
        return self._kept.pop(key, None)

    def drop(self, key: tuple[str, str]) -> None:
        kept = self._kept.pop(key, None)
        if kept is not None:
            discard_quietly(kept.path)

    def close(self) -> None:
        while self._kept:
            discard_quietly(self._kept.popitem()[1].path)


def _write_sparse(path: Path, start: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_at(fd, data, start)
    finally:
        os.close(fd)


def discard_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()

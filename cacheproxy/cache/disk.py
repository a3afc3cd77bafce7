"""Whether the cache's disk has room: decided here, for files and pages alike.

The state is remembered, so /ready and the status page can say the disk is full, and checked
again on every question, so caching resumes by itself once space is freed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

# Free space kept beyond a file's size, so SQLite and the pages still have room.
DISK_RESERVE = 64 * 1024 * 1024
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskSpace:
    def __init__(self, path: Path, reserve: int = DISK_RESERVE) -> None:
        self.path = path
        self.reserve = reserve
        self.full = False

    async def has_room(self, size: int) -> bool:
        free = await asyncio.to_thread(_free_bytes, self.path)
        if free < self.reserve:
            self.note_full()
        elif self.full:
            log.info("disk has room again: caching resumes")
            self.full = False
        return size + self.reserve <= free

    async def refresh(self) -> bool:
        """Whether the disk is full, looked at now."""
        await self.has_room(0)
        return self.full

    def note_full(self) -> None:
        if not self.full:
            log.warning("disk full: files and pages are served without being cached")
        self.full = True

    def needed_mib(self, size: int) -> int:
        return (size + self.reserve) // 2**20


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0

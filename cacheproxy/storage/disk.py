"""Whether the cache's disk has room: decided here, for files and pages alike.

The state is remembered, so /ready and the status page can say the disk is full, and checked
again on every question, so caching resumes by itself once space is freed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import sqlite3
from pathlib import Path

import diskcache

log = logging.getLogger(__name__)

# Free space kept beyond a file's size, so SQLite and the pages still have room.
DISK_RESERVE = 64 * 1024 * 1024
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# What a write to the store can fail with: SQLite's own errors ("database or disk is full"),
# diskcache's lock timeout, and the file system's errors for values kept as files.
STORE_WRITE_ERRORS = (sqlite3.Error, diskcache.Timeout, OSError)
_SQLITE_FULL = 13  # sqlite3.SQLITE_FULL, which the module names only from Python 3.11


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


def is_no_space(exc: BaseException) -> bool:
    """Whether a failed write failed for lack of space, as SQLite or the file system says."""
    if isinstance(exc, OSError):
        return exc.errno in NO_SPACE
    if isinstance(exc, sqlite3.Error):
        # sqlite_errorcode exists from Python 3.11; the message is SQLite's own for SQLITE_FULL.
        code = getattr(exc, "sqlite_errorcode", None)
        return code == _SQLITE_FULL or "disk is full" in str(exc)
    return False


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0

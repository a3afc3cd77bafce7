"""Files as the store holds them: a verified file waiting in staging, the diskcache Disk that
moves it into place instead of copying it, and what a lookup of a stored file answers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import diskcache


@dataclass(frozen=True)
class StagedFile:
    """A complete, verified file in the staging directory, ready to be moved into the store."""

    path: Path


class RenamingDisk(diskcache.Disk):
    """diskcache's Disk, except that a StagedFile is moved into place instead of copied."""

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if isinstance(value, StagedFile):
            filename, full_path = self.filename(key, value)
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            os.rename(value.path, full_path)
            return os.path.getsize(full_path), diskcache.core.MODE_BINARY, filename, None
        return super().store(value, read, key)


@dataclass(frozen=True)
class StoredFile:
    path: str
    sha256: str
    size: int
    mtime: float | None = None  # when it was stored: its Last-Modified

"""A real, small file system for tests that need the disk to fill up (mounting needs root)."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of size mounted at mountpoint, unmounted after; the test is skipped where
    mounting is not permitted."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(path: Path) -> None:
    """Write path until the file system has no byte left."""
    block = b"\0" * 4096
    with open(path, "wb", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    # The last partial block may still fit byte by byte.
    with open(path, "ab", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0")

"""PEP 658 metadata for wheels whose index offers none: read METADATA out of the cached wheel."""

from __future__ import annotations

import struct
import zipfile
import zlib

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from cacheproxy.errors import NoMetadata, NotOwnMetadata
from cacheproxy.protocol.dist_info import pick_metadata

_MAX_METADATA = 16 * 1024 * 1024
# What zipfile raises on a damaged or hostile archive, besides BadZipFile.
_BROKEN_ZIP = (
    zipfile.BadZipFile, OSError, KeyError, EOFError, ValueError, NotImplementedError,
    RuntimeError, zlib.error, struct.error,
)  # fmt: skip


def extract_metadata(wheel_path: str, filename: str) -> bytes:
    """The METADATA of the wheel's own .dist-info directory (blocking: run it in a thread)."""
    try:
        name, version, _, _ = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise NoMetadata(str(exc)) from None
    try:
        with zipfile.ZipFile(wheel_path) as archive:
            infos = archive.infolist()
            try:
                chosen = pick_metadata((info.filename for info in infos), name, version)
            except NotOwnMetadata as exc:
                raise NoMetadata(f"{filename}: {exc}") from None
            info = next(info for info in infos if info.filename == chosen)
            if info.file_size > _MAX_METADATA:
                raise NoMetadata(f"{filename} has an oversized METADATA")
            return archive.read(info)
    except NoMetadata:
        raise
    except _BROKEN_ZIP as exc:
        raise NoMetadata(f"{filename} is not a readable wheel: {exc}") from None

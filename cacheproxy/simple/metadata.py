"""PEP 658 metadata for wheels whose index offers none: read METADATA out of the cached wheel."""

from __future__ import annotations

import zipfile

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

_MAX_METADATA = 16 * 1024 * 1024


class NoMetadata(ValueError):
    """The file is not a wheel with a readable METADATA."""


def extract_metadata(wheel_path: str, filename: str) -> bytes:
    """The METADATA of the wheel's own .dist-info directory (blocking: run it in a thread)."""
    try:
        name, version, _, _ = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise NoMetadata(str(exc)) from None
    try:
        with zipfile.ZipFile(wheel_path) as archive:
            candidates = [
                info
                for info in archive.infolist()
                if info.filename.count("/") == 1
                and info.filename.endswith(".dist-info/METADATA")
                and _dist_info_matches(info.filename.split("/")[0], name)
            ]
            if len(candidates) != 1:
                raise NoMetadata(f"{filename} has {len(candidates)} METADATA files")
            if candidates[0].file_size > _MAX_METADATA:
                raise NoMetadata(f"{filename} has an oversized METADATA")
            return archive.read(candidates[0])
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise NoMetadata(f"{filename} is not a readable wheel: {exc}") from None


def _dist_info_matches(directory: str, name: str) -> bool:
    project = directory.removesuffix(".dist-info").rsplit("-", 1)[0]
    return canonicalize_name(project) == name

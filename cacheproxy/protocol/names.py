"""Project names and file names: validation and PEP 503 normalization."""

from __future__ import annotations

import re

from packaging.utils import canonicalize_name

from cacheproxy.errors import InvalidName

# PEP 508 names; the length cap keeps hostile paths from reaching the store or the upstream.
# Used with fullmatch: "$" would also match before a trailing newline.
_PROJECT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?")
_MAX_FILENAME = 255


def normalize_project(raw: str) -> str:
    """The PEP 503 form of a project name, or InvalidName."""
    if not _PROJECT_NAME.fullmatch(raw):
        raise InvalidName(f"not a valid project name: {raw[:80]!r}")
    return canonicalize_name(raw)


def check_filename(filename: str) -> str:
    """Accept only plain file names: nothing that could climb out of a directory."""
    if (
        not filename
        or len(filename) > _MAX_FILENAME
        or filename[0] == "."
        or "/" in filename
        or "\\" in filename
        or "\x00" in filename
        or not filename.isprintable()
    ):
        raise InvalidName(f"not a valid file name: {filename[:80]!r}")
    return filename

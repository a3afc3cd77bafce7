"""The PyPI JSON API's documents as data: checked, and with their file URLs pointed at the proxy.

A project's document (/pypi/PROJECT/json) lists its files under `urls` (the latest release)
and `releases` (every release); a release's document (/pypi/PROJECT/VERSION/json) has `urls`
only. Every file URL is replaced with the proxy's own, so downloads come back through it;
a file whose name the proxy would not serve is left out rather than pointing elsewhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from cacheproxy.errors import DocumentError, InvalidName
from cacheproxy.ops.redact import redact_url
from cacheproxy.protocol.names import check_filename
from cacheproxy.protocol.page import without_userinfo

# A release as it may appear in a path: PEP 440 versions and the legacy ones PyPI still has.
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]{0,127}")


def check_release(raw: str) -> str:
    if not _RELEASE.fullmatch(raw):
        raise InvalidName(f"not a valid version: {raw[:80]!r}")
    return raw


def parse_document(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DocumentError(f"upstream JSON API sent no JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("info", {}), dict):
        raise DocumentError("upstream JSON API sent something that is not a project document")
    return data


# How a document's file URLs are made: from the file name (the proxy's own URLs), or None to
# keep each file's own URL (the transparent face), credentials taken out.
FileUrl = Callable[[str], str] | None


def _files(value: Any, file_url: FileUrl, hidden: frozenset[str]) -> list[dict[str, Any]]:
    kept = []
    for item in value if isinstance(value, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
            continue
        try:
            filename = check_filename(item["filename"])
        except InvalidName:
            continue
        if filename in hidden:  # held back by the install rules, as on the project's page
            continue
        if file_url is not None:
            kept.append({**_scrubbed(item), "url": file_url(filename)})
        elif isinstance(item.get("url"), str):
            kept.append({**_scrubbed(item), "url": without_userinfo(item["url"])})
    return kept


def _scrubbed(value: Any) -> Any:
    """Every string with URL credentials taken out: an upstream that echoes the proxy's own
    credentials into its links (some do) must not hand them to every client."""
    if isinstance(value, str):
        return redact_url(value) if "@" in value else value
    if isinstance(value, dict):
        return {key: _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item) for item in value]
    return value


def rewritten(
    data: dict[str, Any], file_url: FileUrl, hidden: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The document with its file URLs made by file_url(filename) (None: each file's own),
    credentials scrubbed, and the files in hidden left out."""
    out = {key: _scrubbed(value) for key, value in data.items() if key not in ("urls", "releases")}
    if "urls" in data:
        out["urls"] = _files(data["urls"], file_url, hidden)
    if isinstance(data.get("releases"), dict):
        out["releases"] = {
            str(release): _files(files, file_url, hidden)
            for release, files in data["releases"].items()
        }
    return out


def render_document(
    data: dict[str, Any], file_url: FileUrl, hidden: frozenset[str] = frozenset()
) -> bytes:
    body = json.dumps(rewritten(data, file_url, hidden), separators=(",", ":"), ensure_ascii=False)
    return body.encode()


def file_count(data: dict[str, Any] | None) -> int:
    """How many file entries a document holds: its weight in memory."""
    if data is None:
        return 0
    releases = data.get("releases")
    count = len(data.get("urls") or ())
    if isinstance(releases, dict):
        count += sum(len(files) for files in releases.values() if isinstance(files, list))
    return count

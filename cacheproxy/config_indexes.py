"""Named indexes: extra upstreams served under /index/NAME/simple/, each with its own TTLs,
size limit, credentials, shared tier and install rules."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cacheproxy.config_values import (
    parse_duration,
    parse_projects,
    parse_requirement_specs,
    parse_shared_cache,
    parse_size,
    parse_timestamp,
    parse_unknown_upload_time,
    parse_upstream,
)

_INDEX_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


@dataclass(frozen=True)
class NamedIndex:
    """An extra upstream served under /index/<name>/simple/, never merged with the others."""

    name: str
    # May carry credentials: kept out of repr, shown only through Config.public_upstream.
    upstream: str = dataclasses.field(repr=False)
    page_ttl: float | None = None  # None: the main index's setting
    negative_ttl: float | None = None
    max_size: int | None = None
    password_env: str | None = None  # the variable holding its password, read at start-up
    username: str | None = None
    shared_cache: str | None = None  # None: the main index's setting
    # What may be installed (cache/rules.py); None: the main index's rule.
    min_release_age: float | None = None
    release_age_exempt: tuple[str, ...] | None = None
    exclude_newer: float | None = None
    deny: tuple[str, ...] | None = None
    allow: tuple[str, ...] | None = None
    unknown_upload_time: str | None = None


# The install rules (cache/rules.py) a named index may set for itself, and their readers.
RULE_PARSERS: dict[str, Callable[[Any], Any]] = {
    "min_release_age": parse_duration,
    "release_age_exempt": parse_projects,
    "exclude_newer": parse_timestamp,
    "deny": parse_requirement_specs,
    "allow": parse_requirement_specs,
    "unknown_upload_time": parse_unknown_upload_time,
}


_INDEX_KEYS = {
    "url": parse_upstream,
    "page_ttl": parse_duration,
    "negative_ttl": parse_duration,
    "max_size": parse_size,
    "username": str,
    "password_env": str,
    "shared_cache": parse_shared_cache,
    **RULE_PARSERS,
}


def _parse_index(name: str, value: Any) -> NamedIndex:
    if not _INDEX_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not an index name (lowercase letters, digits, . _ -)")
    table = {"url": value} if isinstance(value, str) else value
    if not isinstance(table, dict) or "url" not in table:
        raise ValueError(f"index {name!r} needs a url")
    fields: dict[str, Any] = {}
    for key, raw in table.items():
        field_name = key.replace("-", "_")
        if field_name not in _INDEX_KEYS:
            raise ValueError(f"index {name!r}: unknown key {key!r}")
        try:
            fields[field_name] = _INDEX_KEYS[field_name](raw)
        except ValueError as exc:
            raise ValueError(f"index {name!r} {key}: {exc}") from None
    return NamedIndex(name=name, upstream=fields.pop("url"), **fields)


def parse_indexes(value: Any) -> tuple[NamedIndex, ...]:
    """NAME=URL pairs (comma or space separated), or a TOML table of names to URLs or tables."""
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = []
        for item in re.split(r"[,\s]+", str(value).strip()):
            if not item:
                continue
            name, sep, url = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r} is not NAME=URL")
            pairs.append((name, url))
    indexes = tuple(_parse_index(str(name), raw) for name, raw in pairs)
    names = [index.name for index in indexes]
    if len(set(names)) != len(names):
        raise ValueError("an index name is given twice")
    return indexes

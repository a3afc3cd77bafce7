"""Readers of single setting values: each returns the typed value or raises ConfigError with a
one-line reason."""

from __future__ import annotations

import datetime
import re
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from yarl import URL

from cacheproxy.ops.redact import redact_url
from cacheproxy.storage.s3.settings import parse_s3_url


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and fits on one line."""

    def __init__(self, message: str) -> None:
        # Values are quoted back to say what is wrong: never with a URL's password.
        super().__init__(redact_url(" ".join(message.split())))


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PROJECT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


def parse_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = match and _SIZE_UNITS.get(match.group(2).lower())
        if not match or unit is None:
            raise ValueError(f"{value!r} is not a size (like 20GiB, 500MB or 1073741824)")
        size = int(float(match.group(1)) * unit)
    if size <= 0:
        raise ValueError(f"{value!r} must be more than zero")
    return size


def parse_rate(value: Any) -> int:
    """Bytes per second, like 10KiB or 10KiB/s; 0 turns the check off."""
    if isinstance(value, int) and not isinstance(value, bool):
        return 0 if value == 0 else parse_size(value)
    text = str(value).strip().removesuffix("/s")
    return 0 if text == "0" else parse_size(text)


def parse_positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} must be more than zero")
    return seconds


def parse_duration(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value).lower())
        if not match:
            raise ValueError(f"{value!r} is not a duration (like 30, 30s, 10m or 1h)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError(f"{value!r} must not be negative")
    return seconds


def parse_port(value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r} is not a port number (0-65535)")
    return port


def parse_retries(value: Any) -> int:
    try:
        retries = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a whole number") from None
    if not 0 <= retries <= 10:
        raise ValueError(f"{value!r} is not between 0 and 10")
    return retries


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not true or false")


def parse_upstream(value: Any) -> str:
    url = URL(str(value))
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL of a simple index")
    return str(value)


def parse_json_api_url(value: Any) -> str:
    """An http(s) URL, or "off" for an upstream without a JSON API."""
    text = str(value).strip()
    if text.lower() in ("off", "none", "no"):
        return "off"
    url = URL(text)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError('must be an http:// or https:// URL, or "off"')
    return text


def parse_public_url(value: Any) -> str:
    url = URL(str(value).strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL with a host")
    if url.user is not None or url.password is not None:
        raise ValueError("must not carry credentials")
    if url.query_string or url.fragment:
        raise ValueError("must not have a query or fragment")
    return str(url if url.path.endswith("/") else url.with_path(url.path + "/"))


# A host name or an fnmatch pattern of one: no scheme, port, path or spaces.
_HOST_PATTERN = re.compile(r"[a-z0-9*?\[\]._-]+")


def parse_file_hosts(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    patterns = tuple(
        part.strip().lower() for item in items for part in str(item).split(",") if part.strip()
    )
    for pattern in patterns:
        if not _HOST_PATTERN.fullmatch(pattern):
            raise ValueError(f"{pattern!r} is not a host name or pattern (like *.example.org)")
    return patterns


def parse_host(value: Any) -> str:
    text = str(value).strip()
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{value!r} is not a host name or address")
    return text


def parse_log_level(value: Any) -> str:
    level = str(value).strip().lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"{value!r} is not one of debug, info, warning, error")
    return level


def parse_tokens(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    tokens = tuple(str(t).strip() for t in items if str(t).strip())
    if any(len(t) < 8 for t in tokens):
        raise ValueError("each token needs at least 8 characters")
    return tokens


def parse_log_format(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("text", "json"):
        raise ValueError(f"{value!r} is not text or json")
    return text


def parse_shared_cache(value: Any) -> str:
    parse_s3_url(str(value))  # raises SharedCacheError, a ValueError that says what is wrong
    return str(value).strip()


# -- what a fleet may install (see cacheproxy/pages/rules.py) ------------------------------


def _items(value: Any, separators: str) -> list[str]:
    """A TOML array or repeated flags give items; a string is split at separators."""
    raw = value if isinstance(value, (list, tuple)) else [value]
    items = [part.strip() for item in raw for part in re.split(separators, str(item))]
    return [item for item in items if item]


def _end_of(day: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time())


def parse_timestamp(value: Any) -> float:
    """RFC 3339 (2024-05-01T12:00:00Z) or a date (2024-05-01: the whole day counts, so the
    snapshot is taken at the end of it); UTC unless an offset is given. Seconds since the
    epoch."""
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, datetime.date):  # a TOML date
        moment = _end_of(value)
    else:
        text = str(value).strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                moment = _end_of(datetime.date.fromisoformat(text))
            else:
                moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{value!r} is not a timestamp (like 2024-05-01T12:00:00Z or 2024-05-01)"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def parse_projects(value: Any) -> tuple[str, ...]:
    """Project names, comma or space separated, normalised as the index does."""
    names = []
    for item in _items(value, r"[,\s]+"):
        if not _PROJECT.fullmatch(item):
            raise ValueError(f"{item!r} is not a project name")
        names.append(canonicalize_name(item))
    return tuple(names)


def parse_requirement_specs(value: Any) -> tuple[str, ...]:
    """PEP 508 requirement strings (evilpkg, requests>=2.99, foo==1.2.3), separated by ';' or
    new lines in a string (commas belong to specifiers); kept in their normalised form."""
    specs = []
    for item in _items(value, r"[;\n]"):
        try:
            requirement = Requirement(item)
        except InvalidRequirement:
            raise ValueError(f"{item!r} is not a requirement (like evilpkg or foo>=2.0)") from None
        if requirement.url or requirement.extras or requirement.marker:
            raise ValueError(f"{item!r}: only a name and version specifiers are allowed")
        specs.append(f"{canonicalize_name(requirement.name)}{requirement.specifier}")
    return tuple(specs)


_UNKNOWN_UPLOAD_TIME = ("hide", "show")


def parse_unknown_upload_time(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in _UNKNOWN_UPLOAD_TIME:
        raise ValueError(f"{value!r} is not hide or show")
    return text

"""The one typed configuration: its settings, how each value is read, the named indexes and
where the shared tier lives, and how they are assembled.

Precedence is flag > environment > config file > default, for every setting alike, and every
value goes through the same parser whichever source it came from. A parser raises ValueError
with a one-line reason; load_config turns it into a ConfigError naming the source.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from yarl import URL

from cacheproxy.errors import ConfigError, SharedCacheError, SharedCacheExtraMissing
from cacheproxy.ops.redact import redact_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "CACHEPROXY_"
CONFIG_ENV = "CACHEPROXY_CONFIG"


# -- single values: each parser returns the typed value or raises ValueError ----------------


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


# A host the transparent face answers CONNECTs for, or passes through: a name, *.domain or an
# address, with the port its clients connect to (443 unless given).
_HOST_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^\s:/\[\]]+))(?::(?P<port>[0-9]{1,5}))?"
)


@dataclass(frozen=True, order=True)
class HostPort:
    """A host pattern (a name, *.domain or an address, lowercase) and one port of it."""

    host: str
    port: int = 443

    def matches(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        if port != self.port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and host != self.host[2:]
        return host == self.host

    def __str__(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return shown if self.port == 443 else f"{shown}:{self.port}"


def parse_host_port(value: Any) -> HostPort:
    text = str(value).strip().lower()
    match = _HOST_PORT.fullmatch(text)
    if not match:
        raise ValueError(f"{value!r} is not HOST or HOST:PORT")
    port = int(match["port"] or 443)
    if not 0 < port < 65536:
        raise ValueError(f"{value!r}: port {port} is out of range")
    return HostPort(match["v6"] or match["name"].rstrip("."), port)


def parse_host_ports(value: Any) -> tuple[HostPort, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    parts = [part for item in items for part in re.split(r"[,\s]+", str(item)) if part]
    return tuple(dict.fromkeys(parse_host_port(part) for part in parts))


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


# -- the shared tier: an S3 bucket and prefix, the endpoint, region and keys ---------------

# S3's rule for new buckets, less the rarely used dotted names that break TLS virtual hosting.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9!_.*'()-]+")

DEFAULT_REGION = "us-east-1"


# The library the s3 extra installs: a shared cache needs it, nothing else does.
S3_CLIENT = "aiobotocore"


def require_client() -> None:
    """Raises SharedCacheExtraMissing without the S3 client library; imports nothing of it."""
    try:
        found = importlib.util.find_spec(S3_CLIENT) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise SharedCacheExtraMissing


@dataclass(frozen=True)
class SharedCacheSettings:
    """Where the shared tier lives (an S3 bucket and prefix), how to reach it, and its tuning."""

    bucket: str
    prefix: str = ""  # without slashes at either end; "" for the bucket's root
    endpoint: str | None = None  # None: the provider's own endpoint for the region
    region: str = DEFAULT_REGION
    access_key_id: str | None = dataclasses.field(default=None, repr=False)
    # None for both keys: the SDK's own chain (profile, instance role, web identity).
    secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    multipart_threshold: int = 8 * 1024 * 1024
    part_size: int = 5 * 1024 * 1024  # the smallest part S3 accepts: bounds the memory per upload
    failure_threshold: int = 5  # consecutive failures that open the breaker
    cooldown: float = 30.0  # seconds the breaker stays open before one probe

    @classmethod
    def from_url(
        cls,
        url: str,
        environ: Mapping[str, str] | None = None,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        **tuning: Any,
    ) -> SharedCacheSettings:
        """s3://BUCKET[/PREFIX]; the keywords are the config file's values, and the standard
        AWS environment variables beat them, as the environment beats the file everywhere."""
        env = os.environ if environ is None else environ
        bucket, prefix = parse_s3_url(url)
        require_client()  # checked with the settings, so that `serve` refuses before it binds
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or endpoint
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or region
        if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_SECRET_ACCESS_KEY"):
            access_key_id = env.get("AWS_ACCESS_KEY_ID")
            secret_access_key = env.get("AWS_SECRET_ACCESS_KEY")
            session_token = env.get("AWS_SESSION_TOKEN")
        if (access_key_id is None) != (secret_access_key is None):
            raise SharedCacheError("shared cache: give both the access key id and the secret key")
        return cls(
            bucket=bucket,
            prefix=prefix,
            endpoint=parse_endpoint(endpoint) if endpoint else None,
            region=region or DEFAULT_REGION,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            **tuning,
        )

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def __str__(self) -> str:
        """For logs and status pages: where, never with which keys."""
        where = self.endpoint or f"region {self.region}"
        return f"{self.url} at {where}"


def parse_s3_url(url: str) -> tuple[str, str]:
    text = str(url).strip()
    if not text.startswith("s3://"):
        raise SharedCacheError(f"shared cache {text!r} is not an s3://BUCKET[/PREFIX] URL")
    bucket, _, prefix = text[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise SharedCacheError(
            f"shared cache bucket {bucket!r} is not a bucket name "
            "(3-63 lowercase letters, digits, dots and dashes)"
        )
    parts = [part for part in prefix.split("/") if part]
    if any(not _PREFIX_PART.fullmatch(part) or part in (".", "..") for part in parts):
        raise SharedCacheError(f"shared cache prefix {prefix!r} has characters S3 keys avoid")
    return bucket, "/".join(parts)


def parse_endpoint(value: str) -> str:
    url = URL(str(value).strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise SharedCacheError("shared cache endpoint must be an http:// or https:// URL")
    if url.user or url.password:
        raise SharedCacheError("shared cache endpoint must not carry credentials; use the keys")
    return str(url.with_path(url.path.rstrip("/"))).rstrip("/")


def parse_shared_cache(value: Any) -> str:
    parse_s3_url(str(value))  # raises SharedCacheError, a ValueError that says what is wrong
    return str(value).strip()


# -- named indexes: extra upstreams served under /index/NAME/simple/ -----------------------

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
    # What may be installed (pages/rules.py); None: the main index's rule.
    min_release_age: float | None = None
    release_age_exempt: tuple[str, ...] | None = None
    exclude_newer: float | None = None
    deny: tuple[str, ...] | None = None
    allow: tuple[str, ...] | None = None
    unknown_upload_time: str | None = None


# The install rules (pages/rules.py) a named index may set for itself, and their readers.
RULE_PARSERS: dict[str, Callable[[Any], Any]] = {
    "min_release_age": parse_duration,
    "release_age_exempt": parse_projects,
    "exclude_newer": parse_timestamp,
    "deny": parse_requirement_specs,
    "allow": parse_requirement_specs,
    "unknown_upload_time": parse_unknown_upload_time,
}


_INDEX_KEYS: dict[str, Callable[[Any], Any]] = {
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


# -- the Config and how it is assembled ----------------------------------------------------


def _host_port_of(url: URL) -> HostPort:
    port = url.explicit_port or (443 if url.scheme == "https" else 80)
    return HostPort((url.host or "").lower(), port)


def default_file_hosts(upstream: str) -> tuple[str, ...]:
    """The public index's file host when upstream is that index's simple API, else nothing.
    The public index serves its files from a host of their own; pip knows both (it shows where
    a file came from by them), so they are taken from there, written nowhere here, and without
    loading distlib (default_upstream) to tell the upstream is that index. pip is in every
    virtual environment made with venv; without it, --intercept-host names the host."""
    try:
        from pip._internal.models.index import PyPI
    except ImportError:
        return ()
    simple = str(getattr(PyPI, "simple_url", "")).rstrip("/")
    host = getattr(PyPI, "file_storage_domain", None)
    if not simple or upstream.rstrip("/") != simple or not isinstance(host, str) or not host:
        return ()
    return (host,)


def default_upstream() -> str:
    # The public index's Simple API URL, taken from distlib (no dependencies of its own) so that
    # it is written nowhere in this project: its default locator reads that index's simple pages.
    # Imported here: the import builds a few objects that only this value is wanted from.
    from distlib.locators import SimpleScrapingLocator, default_locator

    return next(
        locator.base_url
        for locator in default_locator.locators
        if isinstance(locator, SimpleScrapingLocator)
    )


def default_cache_dir() -> Path:
    from platformdirs import user_cache_path

    return user_cache_path("cacheproxy", appauthor=False)


# The settings of pages/rules.py, which a named index may set for itself.
RULE_SETTINGS = tuple(RULE_PARSERS)


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 3145
    cache_dir: Path = dataclasses.field(default_factory=default_cache_dir)
    upstream: str = dataclasses.field(default_factory=default_upstream)
    page_ttl: float = 600.0
    negative_ttl: float = 300.0
    max_size: int = 20 * 1024**3
    # Bytes the in-memory page caches of each index hold together (parsed and rendered pages);
    # the default suits a proxy in a 256 MiB container: 64 MiB cost 9 MiB more peak RSS with
    # 8 cold clients, for pages that fit in 32 (docs/benchmarks.md).
    memory_budget: int = 32 * 1024**2
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    # The whole page fetch, body included: read_timeout bounds only the gap between bytes.
    page_timeout: float = 30.0
    # File transfers slower than this on average over min_rate_window fail (0: no floor).
    min_rate: int = 10 * 1024
    min_rate_window: float = 30.0
    retries: int = 2
    idle_timeout: float = 15.0
    offline: bool = False
    log_level: str = "info"
    log_format: str = "text"
    auth_tokens: tuple[str, ...] = ()
    auth_tokens_file: Path | None = None
    indexes: tuple[NamedIndex, ...] = ()
    # Where clients reach the proxy (behind a reverse proxy, say): shown instead of what the
    # request's Host header claims. Ends in a slash.
    public_url: str | None = None
    # Host patterns file URLs in upstream pages may point to besides the upstream's own
    # origin; empty: any host a page names.
    file_hosts: tuple[str, ...] = ()
    # The upstream's JSON API (/pypi/PROJECT/json): None derives it from the upstream URL,
    # "off" says it has none (answered 404 at once).
    json_api_url: str | None = None
    shared_cache: str | None = None  # s3://BUCKET[/PREFIX]
    # HTTPS when both are set: a PEM certificate chain and its key, read again on SIGHUP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # From the file only; the standard AWS variables beat them (see shared_cache_settings).
    shared_cache_endpoint: str | None = None
    shared_cache_region: str | None = None
    shared_cache_access_key_id: str | None = dataclasses.field(default=None, repr=False)
    shared_cache_secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    # What may be installed: see pages/rules.py and docs/policy.md.
    min_release_age: float = 0.0
    release_age_exempt: tuple[str, ...] = ()
    exclude_newer: float | None = None  # seconds since the epoch
    deny: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    # Files whose upload time is not known while a cooldown or snapshot is on: hidden, since
    # a file that cannot be dated cannot be shown to be old enough.
    unknown_upload_time: str = "hide"
    # Resolution lookahead (prefetch/lookahead.py): read ahead what a resolver will ask for next.
    lookahead: bool = True
    # The transparent HTTPS face (docs/lockfiles.md): CONNECTs to the package hosts are
    # answered from the cache under certificates of the proxy's own CA.
    transparent: bool = True
    intercept_host: tuple[HostPort, ...] = ()  # package hosts besides the upstreams'
    tunnel: tuple[HostPort, ...] = ()  # hosts passed through untouched (git, tool downloads)
    # An organisation's own CA instead of the one made beside the cache.
    ca_cert: Path | None = None
    ca_key: Path | None = None

    def shared_cache_settings(self, environ: Mapping[str, str]) -> SharedCacheSettings | None:
        """Where the shared tier is, or None without one; raises SharedCacheError (one line)."""
        if self.shared_cache is None:
            return None
        return SharedCacheSettings.from_url(
            self.shared_cache,
            environ,
            endpoint=self.shared_cache_endpoint,
            region=self.shared_cache_region,
            access_key_id=self.shared_cache_access_key_id,
            secret_access_key=self.shared_cache_secret_access_key,
        )

    def for_index(self, index: NamedIndex) -> Config:
        """The settings one named index runs with: its own upstream, TTLs and cache."""
        return dataclasses.replace(
            self,
            upstream=index.upstream,
            page_ttl=self.page_ttl if index.page_ttl is None else index.page_ttl,
            negative_ttl=self.negative_ttl if index.negative_ttl is None else index.negative_ttl,
            max_size=self.max_size if index.max_size is None else index.max_size,
            cache_dir=self.cache_dir / "indexes" / index.name,
            shared_cache=self.shared_cache if index.shared_cache is None else index.shared_cache,
            indexes=(),
            json_api_url=None,  # derived from the index's own upstream
            **{
                name: getattr(index, name)
                for name in RULE_SETTINGS
                if getattr(index, name) is not None
            },
        )

    def index_named(self, name: str) -> NamedIndex:
        for index in self.indexes:
            if index.name == name:
                return index
        known = ", ".join(i.name for i in self.indexes) or "none are configured"
        raise ConfigError(f"no index named {name!r} ({known})")

    @property
    def upstream_url(self) -> URL:
        """The upstream index without credentials, ending in a slash."""
        url = URL(self.upstream).with_user(None).with_password(None)
        return url if url.path.endswith("/") else url.with_path(url.path + "/")

    @property
    def upstream_credentials(self) -> tuple[str, str] | None:
        url = URL(self.upstream)
        if url.user is None:
            return None
        return url.user, url.password or ""

    def client_tokens(self) -> frozenset[str]:
        """Every token a client may present: the listed ones and those in the tokens file."""
        tokens = set(self.auth_tokens)
        if self.auth_tokens_file is not None:
            try:
                lines = self.auth_tokens_file.read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"cannot read the tokens file: {exc}") from None
            tokens.update(line.strip() for line in lines if line.strip() and line[0] != "#")
        return frozenset(tokens)

    @property
    def json_api_base(self) -> URL | None:
        """Where the upstream's JSON API lives, ending in a slash, without credentials; None
        when it has none. Beside the simple index by default: .../simple/ -> .../pypi/."""
        if self.json_api_url == "off":
            return None
        if self.json_api_url is not None:
            url = URL(self.json_api_url).with_user(None).with_password(None)
            return url if url.path.endswith("/") else url.with_path(url.path + "/")
        base = self.upstream_url
        if not base.path.endswith("/simple/"):
            return None
        return base.with_path(base.path.removesuffix("simple/") + "pypi/")

    @property
    def public_upstream(self) -> str:
        """The upstream as it may appear in logs and pages: never with credentials."""
        return str(self.upstream_url)

    def package_hosts(self) -> tuple[HostPort, ...]:
        """The hosts whose CONNECTs the transparent face answers itself: every upstream's
        host, the file hosts that name a host (or *.domain), the default upstream's file host
        when it is the upstream, and --intercept-host additions. A lock install asks for files
        before any page, so these are known up front rather than learned from pages."""
        hosts = [_host_port_of(URL(self.upstream))]
        hosts += [_host_port_of(URL(index.upstream)) for index in self.indexes]
        for pattern in self.file_hosts:
            with contextlib.suppress(ValueError):
                hosts.append(parse_host_port(pattern))
        hosts += [HostPort(host) for host in default_file_hosts(self.upstream)]
        hosts += self.intercept_host
        return tuple(dict.fromkeys(host for host in hosts if host.host))


def _parse_path(value: Any) -> Path:
    text = str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return Path(text).expanduser()


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "host": parse_host,
    "port": parse_port,
    "cache_dir": _parse_path,
    "upstream": parse_upstream,
    "page_ttl": parse_duration,
    "negative_ttl": parse_duration,
    "max_size": parse_size,
    "memory_budget": parse_size,
    "connect_timeout": parse_duration,
    "read_timeout": parse_duration,
    "page_timeout": parse_positive_duration,
    "min_rate": parse_rate,
    "min_rate_window": parse_positive_duration,
    "retries": parse_retries,
    "idle_timeout": parse_duration,
    "offline": parse_bool,
    "log_level": parse_log_level,
    "log_format": parse_log_format,
    "auth_tokens": parse_tokens,
    "auth_tokens_file": _parse_path,
    "indexes": parse_indexes,
    "public_url": parse_public_url,
    "file_hosts": parse_file_hosts,
    "json_api_url": parse_json_api_url,
    "shared_cache": parse_shared_cache,
    "tls_cert": _parse_path,
    "tls_key": _parse_path,
    "lookahead": parse_bool,
    "transparent": parse_bool,
    "intercept_host": parse_host_ports,
    "tunnel": parse_host_ports,
    "ca_cert": _parse_path,
    "ca_key": _parse_path,
    **RULE_PARSERS,
}

SETTINGS = tuple(_PARSERS)
# Only in the file: the environment has the standard AWS variables for these, and a secret
# does not belong on a command line.
_FILE_ONLY: dict[str, Callable[[Any], Any]] = {
    "shared_cache_endpoint": str,
    "shared_cache_region": str,
    "shared_cache_access_key_id": str,
    "shared_cache_secret_access_key": str,
}
FILE_ONLY_SETTINGS = tuple(_FILE_ONLY)


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def flag_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def read_config_file(path: Path) -> dict[str, Any]:
    """Settings from a TOML file, keys spelled like the flags (dashes or underscores)."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(redact_url(f"config file {path} cannot be read: {exc}")) from None
    settings = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in _PARSERS and name not in _FILE_ONLY:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        settings[name] = (value, f"{key} in {path}")
    return settings


def load_config(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None = None,
) -> Config:
    """Assemble the Config; flags holds only the options given on the command line."""
    chosen: dict[str, tuple[Any, str]] = {}
    if config_file is None and environ.get(CONFIG_ENV):
        config_file = Path(environ[CONFIG_ENV])
    if config_file is not None:
        chosen.update(read_config_file(config_file))
    for name in SETTINGS:
        if env_name(name) in environ:
            chosen[name] = (environ[env_name(name)], env_name(name))
        if flags.get(name) is not None:
            chosen[name] = (flags[name], flag_name(name))
    values = {}
    for name, (raw, source) in chosen.items():
        try:
            parser = _PARSERS[name] if name in _PARSERS else _FILE_ONLY[name]
            values[name] = parser(raw)
        except ValueError as exc:
            # Values are quoted back to say what is wrong: never with a URL's password.
            raise ConfigError(redact_url(f"invalid {source}: {exc}")) from None
    if "indexes" in values:
        values["indexes"] = tuple(_with_credentials(i, environ) for i in values["indexes"])
    return Config(**values)


def _with_credentials(index: NamedIndex, environ: Mapping[str, str]) -> NamedIndex:
    """Credentials named in the file are put into the URL, where the upstream client takes
    them from; the password itself stays out of the file."""
    if index.username is None and index.password_env is None:
        return index
    password = ""
    if index.password_env is not None:
        if index.password_env not in environ:
            raise ConfigError(
                f"index {index.name!r}: environment variable {index.password_env} is not set"
            )
        password = environ[index.password_env]
    url = URL(index.upstream).with_user(index.username or "").with_password(password)
    return dataclasses.replace(index, upstream=str(url))

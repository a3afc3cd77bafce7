"""The one typed configuration object, and how it is assembled.

Precedence is flag > environment > config file > default, for every setting alike, and every
value goes through the same parser whichever source it came from.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from cacheproxy.storage.s3.settings import SharedCacheSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from cacheproxy.config_indexes import RULE_PARSERS, NamedIndex, parse_indexes
from cacheproxy.config_values import (
    ConfigError,
    parse_bool,
    parse_duration,
    parse_file_hosts,
    parse_host,
    parse_json_api_url,
    parse_log_format,
    parse_log_level,
    parse_port,
    parse_positive_duration,
    parse_public_url,
    parse_rate,
    parse_retries,
    parse_shared_cache,
    parse_size,
    parse_tokens,
    parse_upstream,
)

ENV_PREFIX = "CACHEPROXY_"
CONFIG_ENV = "CACHEPROXY_CONFIG"


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


# The settings of cache/rules.py, which a named index may set for itself.
RULE_SETTINGS = (
    "min_release_age",
    "release_age_exempt",
    "exclude_newer",
    "deny",
    "allow",
    "unknown_upload_time",
)


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
    # What may be installed: see cache/rules.py and docs/policy.md.
    min_release_age: float = 0.0
    release_age_exempt: tuple[str, ...] = ()
    exclude_newer: float | None = None  # seconds since the epoch
    deny: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    # Files whose upload time is not known while a cooldown or snapshot is on: hidden, since
    # a file that cannot be dated cannot be shown to be old enough.
    unknown_upload_time: str = "hide"
    # Resolution lookahead (cache/lookahead.py): read ahead what a resolver will ask for next.
    lookahead: bool = True

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
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
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
            values[name] = _PARSERS.get(name, _FILE_ONLY.get(name))(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid {source}: {exc}") from None
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

"""Every error the package raises on purpose, in one family; each message is one line that is
safe to show (whoever quotes a value back takes its credentials out first: config.py redacts
the settings it quotes).

CacheproxyError
├── ConfigError (ValueError)     a setting that cannot be used: exit code 2 at start
│   ├── SharedCacheError         a shared-cache setting that cannot be used
│   │   ├── SharedCacheExtraMissing  the S3 client library (the s3 extra) is not installed
│   │   └── SharedCacheConfigError   the object store said no: no such bucket, keys rejected
│   ├── TlsError                 a certificate or key that cannot be used
│   └── ActivationError          sockets said to be passed by systemd that cannot be used
├── InvalidInput (ValueError)    names or bytes from outside that the proxy will not use
│   ├── InvalidName              a project, file or version name no index could hold
│   ├── PageError                a Simple API page that cannot be understood
│   ├── DocumentError            a JSON API answer that is not a document
│   ├── UnreadableZip            a zip this code will not read (damaged, hostile, unsupported)
│   ├── NoMetadata               a wheel without a readable METADATA of its own
│   └── NotOwnMetadata           no single METADATA of the wheel's own dist-info directory
├── MissingBytes                 not a failure: bytes a partial copy lacks, named to be fetched
├── UpstreamError                the upstream could not be reached or misbehaved (502 / 504)
│   ├── UpstreamRefused          it answered 401 or 403: passed on so the user sees why
│   ├── BadUpstreamPage          a page that cannot be understood
│   └── DownloadFailed           a file transfer failed (cut off, wrong hash, wrong status)
│       └── DiskFull             no room to cache it: the file is relayed uncached instead
├── StorageError                 a store that could not do what was asked
│   ├── SharedTierError          a shared read failed once started: the upstream takes over
│   │   ├── SharedReadError      the object store stopped answering in the middle of a body
│   │   └── CorruptObject        a shared file whose bytes do not hash to its key
│   ├── ObjectMissing            the object store answered 404: a plain miss
│   └── TierUnavailable          the shared tier was skipped (open breaker) or failed
├── CaError                      the transparent face's CA cannot be used, or not for a host
└── CommandError                 a client-side command cannot do what it was asked
    ├── ClientEnvError           an address that cannot be made into an index URL (`env`)
    └── WarmError                a file `warm` cannot read, or a proxy it cannot reach

ConfigError and InvalidInput are ValueErrors too: they are values that are wrong, and the
setting parsers' callers catch ValueError (a bad s3:// URL is a SharedCacheError).
This module imports nothing of the package's: every layer may raise these.
"""

from __future__ import annotations


class CacheproxyError(Exception):
    """Something cacheproxy cannot do as asked; the message names no credentials."""


# -- settings --------------------------------------------------------------------------------


class ConfigError(CacheproxyError, ValueError):
    """A setting that cannot be used; the message names it and fits on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class SharedCacheError(ConfigError):
    """A shared-cache setting that cannot be used; one line, never with a secret in it."""


class SharedCacheExtraMissing(SharedCacheError):
    """A shared cache is configured, but the S3 client library (the s3 extra) is not installed."""

    def __init__(self) -> None:
        super().__init__("the shared cache needs the s3 extra: pip install 'cacheproxy-server[s3]'")


class SharedCacheConfigError(SharedCacheError):
    """The object store answered, and said no: no such bucket, or the keys were rejected."""


class TlsError(ConfigError):
    """A certificate or key that cannot be used, said in one line."""


class ActivationError(ConfigError):
    """The environment says sockets were passed, but they cannot be used."""


# -- what comes from outside -----------------------------------------------------------------


class InvalidInput(CacheproxyError, ValueError):
    """Names or bytes from a client or the upstream that the proxy will not use."""


class InvalidName(InvalidInput):
    """A project or file name that no index could hold."""


class PageError(InvalidInput):
    """An upstream page that cannot be understood."""


class DocumentError(InvalidInput):
    """An upstream JSON API answer that is not a document."""


class UnreadableZip(InvalidInput):
    """The bytes are not a zip this code will read (damaged, hostile or unsupported)."""


class NoMetadata(InvalidInput):
    """The file is not a wheel with a readable METADATA."""


class NotOwnMetadata(InvalidInput):
    """No single METADATA of the wheel's own dist-info directory."""


class MissingBytes(CacheproxyError):
    """Bytes asked of HeldBytes that it does not hold: the range to fetch."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__(start, end)
        self.start, self.end = start, end


# -- the upstream ----------------------------------------------------------------------------


class UpstreamError(CacheproxyError):
    def __init__(self, message: str, *, timeout: bool = False, unreachable: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout
        # No answer at all (as opposed to an error status): the upstream is down or cut off.
        self.unreachable = unreachable or timeout


class UpstreamRefused(UpstreamError):
    """The upstream answered with a status the client should see (401, 403)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status


class BadUpstreamPage(UpstreamError):
    """An upstream page that cannot be read as a Simple API page."""


class DownloadFailed(UpstreamError):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DiskFull(DownloadFailed):
    """No room to cache the file: it is passed through to the client uncached instead."""


# -- storage ---------------------------------------------------------------------------------


class StorageError(CacheproxyError):
    """A store that could not do what was asked."""


class SharedTierError(StorageError):
    """A shared read that failed after it had started; the caller falls back to the upstream."""


class SharedReadError(SharedTierError):
    """The store stopped answering in the middle of a body."""


class CorruptObject(SharedTierError):
    """A shared file whose bytes do not hash to its key: never to be served."""

    def __init__(self, sha256: str, actual: str) -> None:
        super().__init__(f"shared object {sha256} holds bytes with sha256 {actual}")
        self.sha256 = sha256
        self.actual = actual


class ObjectMissing(StorageError):
    """The store answered 404: a plain miss."""


class TierUnavailable(StorageError):
    """Skipped by the open breaker, or failed; already counted."""


# -- client-side commands --------------------------------------------------------------------


class CommandError(CacheproxyError):
    """A client-side command cannot do what it was asked; one line, exit code 2."""


class ClientEnvError(CommandError):
    """An address that cannot be made into an index URL; the message fits on one line."""


class WarmError(CommandError):
    """The input cannot be used (unknown or broken file, proxy unreachable): one line."""


class CaError(CacheproxyError):
    """The transparent face's CA cannot be used as asked: its files, or a host it may not
    vouch for. The message names files and hosts, never key material."""

"""One family of errors for everything the cache can fail at; each message is safe to show.

ProxyError
├── UpstreamError          the upstream could not be reached or misbehaved (502 / 504)
│   ├── UpstreamRefused    it answered 401 or 403: passed on so the user sees why
│   ├── BadUpstreamPage    a page that cannot be understood
│   └── DownloadFailed     a file transfer failed (cut off, wrong hash, wrong status)
│       └── DiskFull       no room to cache it: the file is relayed uncached instead
└── Unsatisfiable          a Range no byte of the file can answer (416)
"""

from __future__ import annotations


class ProxyError(Exception):
    """Something the proxy cannot answer as asked; the message names no credentials."""


class UpstreamError(ProxyError):
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


class Unsatisfiable(ProxyError):
    """No byte of the file lies in the range asked for."""

    def __init__(self, total: int) -> None:
        super().__init__(f"range not satisfiable for a file of {total} bytes")
        self.total = total


class CaError(ProxyError):
    """The transparent face's CA cannot be used as asked: its files, or a host it may not
    vouch for. The message names files and hosts, never key material."""

"""The one HTTP client session that talks to the upstream index and its file hosts.

Also what governs it: the environment it reads once (proxy variables, netrc) and the floor
under a transfer's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import netrc
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.helpers import basicauth_from_netrc, netrc_from_env, proxies_from_env
from yarl import URL

from cacheproxy import __version__
from cacheproxy.config import Config
from cacheproxy.errors import DownloadFailed, UpstreamError
from cacheproxy.ops.metrics import Metrics
from cacheproxy.protocol.negotiation import HTML_LEGACY, HTML_V1, JSON_V1

PAGE_ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, {HTML_LEGACY};q=0.01"
MAX_PAGE_BYTES = 64 * 1024 * 1024
# One read size for every file body: large enough for few event-loop turns per MiB, small
# enough that hundreds of waiting clients do not add up to much memory.
CHUNK_SIZE = 256 * 1024
USER_AGENT = f"cacheproxy/{__version__}"
# Statuses worth asking again: the upstream or a gateway in front of it is briefly unwell.
_TRANSIENT = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class PageResponse:
    status: int
    # The body as it came, compressed or not: pages wait here for a parse slot, and a page
    # of thousands of files is megabytes as JSON but a fifth of that gzipped.
    raw: bytes
    content_type: str
    url: str
    etag: str | None
    last_modified: str | None
    encoding: str = "identity"

    @property
    def body(self) -> bytes:
        """The body decoded, at most MAX_PAGE_BYTES: CPU work, call it in a worker thread."""
        return decoded_page(self.raw, self.encoding)


def decoded_page(raw: bytes, encoding: str) -> bytes:
    """A page body undone from its Content-Encoding, refused past MAX_PAGE_BYTES."""
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UpstreamError(f"upstream sent a page in an encoding not asked for: {encoding[:40]!r}")
    parts, size = [], 0
    try:
        while raw:
            # wbits 47: a gzip or a zlib stream, whichever it is (some servers' "deflate").
            inflater = zlib.decompressobj(47 if encoding != "deflate" else 15)
            part = inflater.decompress(raw, MAX_PAGE_BYTES + 1 - size)
            size += len(part)
            if size > MAX_PAGE_BYTES:
                raise UpstreamError("upstream page is too large")
            if not inflater.eof:
                raise UpstreamError(f"upstream sent a {encoding} page cut short")
            parts.append(part)
            raw = inflater.unused_data  # gzip allows members one after another
    except zlib.error as exc:
        raise UpstreamError(f"upstream sent a page that is not valid {encoding}: {exc}") from None
    return b"".join(parts)


@dataclass(frozen=True)
class UpstreamBody:
    """A file response from the upstream in plain terms: the body is read through `chunks`."""

    status: int
    headers: Mapping[str, str]
    content_length: int | None
    chunks: AsyncIterator[bytes]

    async def read(self, limit: int) -> bytes:
        """The whole body, refused when it is longer than limit."""
        parts, received = [], 0
        async for chunk in self.chunks:
            received += len(chunk)
            if received > limit:
                raise UpstreamError("upstream sent more than was asked for")
            parts.append(chunk)
        return b"".join(parts)


def describe_failure(exc: BaseException) -> UpstreamError:
    """A one-line reason that names no credentials (URLs we build carry none)."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamError("upstream timed out", timeout=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(f"cannot connect to upstream {exc.host}:{exc.port}", unreachable=True)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamError("upstream connection broke off mid-transfer")
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamError(f"upstream request failed ({type(exc).__name__})")
    return UpstreamError(f"upstream request failed ({type(exc).__name__})")


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    parts: list[bytes] = []
    received = 0
    async for chunk in resp.content.iter_any():
        received += len(chunk)
        if received > limit:
            raise UpstreamError("upstream page is too large")
        parts.append(chunk)
    return b"".join(parts)


class Upstream:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        self.base_url = config.upstream_url
        credentials = config.upstream_credentials
        self._authorization = aiohttp.encode_basic_auth(*credentials) if credentials else None
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
        )
        self._page_timeout = config.page_timeout
        self._min_rate, self._rate_window = config.min_rate, config.min_rate_window
        self._session: aiohttp.ClientSession | None = None
        self._environment = ClientEnvironment(uses_proxies=False, netrc=None)
        self._retries = config.retries
        self._backoff = 0.2

    async def open(self) -> None:
        # Proxy variables and netrc credentials, as every other HTTP client honours them.
        self._environment = await asyncio.to_thread(ClientEnvironment.read)
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            headers={"User-Agent": USER_AGENT},
            trust_env=self._environment.uses_proxies,
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=64, limit_per_host=32),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("upstream session is not open")
        return self._session

    def _auth_for(self, url: URL) -> dict[str, str]:
        # Credentials go only to the index's own origin, as pip and uv do.
        if self._authorization and url.origin() == self.base_url.origin():
            return {"Authorization": self._authorization}
        from_netrc = self._environment.authorization(url.host)
        return {"Authorization": from_netrc} if from_netrc else {}

    def page_url(self, project: str) -> URL:
        return self.base_url.join(URL(f"{project}/"))

    async def _request(
        self, kind: str, url: URL, headers: dict[str, str], method: str = "GET", **kwargs
    ) -> aiohttp.ClientResponse:
        """GET (or HEAD) with retries: connection failures, timeouts and transient statuses are
        tried again with backoff, as long as nothing of the body has been read."""
        for attempt in range(self._retries + 1):
            started = time.perf_counter()
            try:
                resp = await self.session.request(method, url, headers=headers, **kwargs)
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                failure = describe_failure(exc)
                self.metrics.upstream_requests.labels(kind, "error").inc()
                self.metrics.upstream_failed(str(failure))
                self.metrics.history.upstream(None)
                if attempt == self._retries:
                    raise failure from None
            else:
                elapsed = time.perf_counter() - started
                self.metrics.upstream_seconds.labels(kind).observe(elapsed)
                self.metrics.upstream_requests.labels(kind, str(resp.status)).inc()
                self.metrics.history.upstream(elapsed if resp.status < 500 else None)
                if resp.status >= 500:
                    self.metrics.upstream_failed(f"upstream answered {resp.status} for {url.path}")
                if resp.status not in _TRANSIENT or attempt == self._retries:
                    return resp
                resp.release()
            await asyncio.sleep(self._backoff * 2**attempt)
        raise AssertionError("unreachable")

    async def fetch_page(self, project: str, headers: dict[str, str]) -> PageResponse:
        """The project's page, within page_timeout for the whole fetch (retries and body
        included), so an upstream that trickles a page cannot hold the client."""
        return await self.fetch_document("page", self.page_url(project), PAGE_ACCEPT, headers)

    async def fetch_document(
        self, kind: str, url: URL, accept: str, headers: dict[str, str]
    ) -> PageResponse:
        """A page-like document (a project page, a JSON API answer), within page_timeout."""
        fetch = self._fetch_page(kind, url, accept, headers)
        try:
            return await asyncio.wait_for(fetch, self._page_timeout)
        except asyncio.TimeoutError:
            # Only the deadline: _fetch_page turns its own timeouts into UpstreamError.
            raise UpstreamError(
                f"upstream timed out: no whole page within {self._page_timeout:g} s",
                timeout=True,
            ) from None

    async def _fetch_page(
        self, kind: str, url: URL, accept: str, headers: dict[str, str]
    ) -> PageResponse:
        request_headers = {
            "Accept": accept,
            "Accept-Encoding": "gzip",
            **headers,
            **self._auth_for(url),
        }
        try:
            async with await self._request(
                kind, url, request_headers, auto_decompress=False
            ) as resp:
                body = b""
                if resp.status == 200:
                    if (resp.content_length or 0) > MAX_PAGE_BYTES:
                        raise UpstreamError("upstream page is too large")
                    body = await _read_limited(resp, MAX_PAGE_BYTES)
                return PageResponse(
                    status=resp.status,
                    raw=body,
                    encoding=resp.headers.get("Content-Encoding", "identity").strip().lower(),
                    content_type=resp.content_type,
                    url=str(resp.url.with_user(None).with_password(None)),
                    etag=resp.headers.get("ETag"),
                    last_modified=resp.headers.get("Last-Modified"),
                )
        except UpstreamError:
            raise
        except Exception as exc:
            raise describe_failure(exc) from None

    @contextlib.asynccontextmanager
    async def open_file(
        self, url: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> AsyncIterator[UpstreamBody]:
        """The upstream response for a file, its body undecoded (hashes cover exact bytes)."""
        target = URL(url)
        request_headers = {
            "Accept-Encoding": "identity",
            **(headers or {}),
            **self._auth_for(target),
        }
        try:
            async with await self._request("file", target, request_headers, method) as resp:
                yield UpstreamBody(
                    resp.status,
                    resp.headers,
                    resp.content_length,
                    _guarded(
                        resp.content.iter_chunked(CHUNK_SIZE),
                        RateFloor(self._min_rate, self._rate_window),
                    ),
                )
        except UpstreamError:
            raise
        except Exception as exc:
            raise describe_failure(exc) from None


async def _guarded(chunks: AsyncIterator[bytes], floor: RateFloor) -> AsyncIterator[bytes]:
    """The body's chunks, with a transfer that breaks off or trickles below the rate floor
    turned into an UpstreamError (DownloadFailed for a trickle)."""
    iterator = aiter(chunks)
    try:
        while True:
            # Only the wait for the upstream counts: time the reader spends is its own.
            started = time.monotonic()
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            floor.add(len(chunk), time.monotonic() - started)
            yield chunk
    except UpstreamError:
        raise
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise describe_failure(exc) from None


# What the environment tells the upstream client: proxy variables and netrc credentials.
#
# aiohttp's `trust_env` reads both again for every request, each in a worker thread: two turns
# through the thread pool that also parses pages, and the netrc file read twice, before a
# request leaves. A cold resolution sends hundreds of small range requests, each one waiting
# there behind page parses. So both are read once, as the session opens, and a request then
# finds its credentials in memory. With proxy variables set, aiohttp keeps choosing the proxy
# for each request itself: whether a host bypasses the proxy is its rule, redirects included.


@dataclass(frozen=True)
class ClientEnvironment:
    uses_proxies: bool  # proxy variables are set: aiohttp reads the environment per request
    netrc: netrc.netrc | None

    @classmethod
    def read(cls) -> ClientEnvironment:
        """Blocking (a file read): call it in a worker thread."""
        return cls(uses_proxies=bool(proxies_from_env()), netrc=netrc_from_env())

    def authorization(self, host: str | None) -> str | None:
        """The Authorization header the netrc file gives this host, as aiohttp would send it;
        None when it gives none, or when aiohttp looks the file up itself (proxies)."""
        if self.uses_proxies or self.netrc is None or host is None:
            return None
        try:
            return basicauth_from_netrc(self.netrc, host).encode()
        except (LookupError, ValueError):  # no entry, or a login aiohttp cannot send
            return None


# A floor under the speed of an upstream file transfer.
#
# --read-timeout bounds only the gap between two bytes, so an upstream that sends one byte a
# second would hold a download (and every client waiting on it) for as long as the file is
# long. Files vary from kilobytes to gigabytes, so an overall deadline would be either too short
# for large files or useless for small ones; instead the average rate over a sliding window must
# stay above a floor. The first window is grace (connection set-up, a slow start), and the
# window is long enough that a slow but steady link passes.
#
# Time is counted only while waiting for the upstream: a reader that is slow itself (a relay to
# a slow client, a busy disk) pauses the clock rather than being blamed on the upstream.


# Samples kept per window: the average is measured over a span at most 1/16 longer than it.
_SAMPLES_PER_WINDOW = 16


class RateFloor:
    """Counts a transfer's bytes as they arrive and fails it when too few came in the last
    window. min_rate 0 turns the check off."""

    def __init__(self, min_rate: int, window: float) -> None:
        self.min_rate = min_rate
        self.window = window
        self._waited = 0.0  # seconds spent waiting for the upstream so far
        self._received = 0
        # (seconds waited, bytes received by then), oldest first; the first is always at or
        # before the start of the window, so the average covers at least a whole window.
        self._samples: deque[tuple[float, int]] = deque([(0.0, 0)])

    def add(self, size: int, waited: float) -> None:
        """Count size bytes that took waited seconds to arrive; raises DownloadFailed when
        the average rate over the last window is below the floor."""
        if self.min_rate <= 0:
            return
        self._waited += waited
        now = self._waited
        self._received += size
        samples = self._samples
        if now - samples[-1][0] >= self.window / _SAMPLES_PER_WINDOW:
            samples.append((now, self._received))
        while len(samples) > 1 and samples[1][0] <= now - self.window:
            samples.popleft()
        since, received_then = samples[0]
        elapsed = now - since
        if elapsed < self.window:
            return  # still within the grace of the first window
        rate = (self._received - received_then) / elapsed
        if rate < self.min_rate:
            raise DownloadFailed(
                f"upstream too slow: {rate:.0f} bytes/s over the last {elapsed:.0f} s,"
                f" below the minimum of {self.min_rate} bytes/s"
            )

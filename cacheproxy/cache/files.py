"""Files (wheels, sdists, .metadata): from the store by path, or streamed from a download."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os

from aiohttp import web

from cacheproxy.cache.downloads import (
    DiskFull,
    Download,
    Downloads,
    close_quietly,
    extract_and_store,
)
from cacheproxy.cache.pages import PageService
from cacheproxy.cache.upstream import Upstream, UpstreamError
from cacheproxy.simple.page import METADATA_SUFFIX, FileSource
from cacheproxy.store.local import Store, StoredFile

log = logging.getLogger(__name__)

_READ_CHUNK = 1024 * 1024
# Reads behind a running download: every waiting client holds one such buffer at a time, and a
# cold proxy with 32 clients has hundreds of them.
_STREAM_CHUNK = 256 * 1024
# Ranges up to this size asked for during a download are fetched once and kept in memory
# while it runs; larger ones are streamed through to their one client.
SHARED_RANGE_LIMIT = 1024 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
# How the cache answered (hit, miss, coalesced, stale...), for the access log.
CACHE_OUTCOME = web.RequestKey("cache_outcome", str)
# Size of a whole file served from the store, known before sendfile runs (for metrics).
STORED_SIZE = web.RequestKey("stored_size", int)


def content_type_for(filename: str) -> str:
    # Never a content type with an encoding: clients must get the exact bytes the hash covers.
    if filename.endswith(".metadata"):
        return "text/plain; charset=utf-8"
    if filename.endswith(".provenance"):
        return "application/json"
    return "application/octet-stream"


class RangeNotSatisfiable(web.HTTPRequestRangeNotSatisfiable):
    def __init__(self, total: int) -> None:
        super().__init__(headers={"Content-Range": f"bytes */{total}"})


def parse_range(header: str | None, total: int | None) -> tuple[int, int] | None:
    """The single byte range asked for, as [start, end); None for the whole file.

    Multiple ranges and ranges on a file of unknown length fall back to the whole file,
    which RFC 9110 allows."""
    if not header or total is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                raise RangeNotSatisfiable(total)
            return max(0, total - length), total
        start = int(first)
        end = int(last) + 1 if last else total
    except ValueError:
        return None
    if start >= total or end <= start:
        raise RangeNotSatisfiable(total)
    return start, min(end, total)


class FileServer:
    def __init__(
        self,
        store: Store,
        pages: PageService,
        downloads: Downloads,
        upstream: Upstream,
        offline: bool,
    ) -> None:
        self.store = store
        self.pages = pages
        self.downloads = downloads
        self.upstream = upstream
        self.offline = offline

    async def serve(self, request: web.Request, project: str, filename: str) -> web.StreamResponse:
        stored = await self.store.find_file(project, filename)
        if stored is not None:
            return _stored_response(request, stored, filename)
        if self.offline:
            raise web.HTTPNotFound(text=f"{filename} is not cached and the proxy is offline\n")
        source = await self.pages.find_file(project, filename)
        if source is None and filename.endswith(METADATA_SUFFIX):
            return await self._serve_extracted(request, project, filename)
        if source is None:
            raise web.HTTPNotFound(text=f"{project} has no file {filename}\n")
        stored = self.downloads.just_stored(project, filename)
        if stored is not None:  # committed while this request was looking things up
            return _stored_response(request, stored, filename)
        coalesced = self.downloads.is_running(project, filename)
        if not coalesced and not await self.downloads.has_room(source.size or 0):
            log.warning("disk full: %s is served without being cached", filename)
            request[CACHE_OUTCOME] = "uncached"
            return await self._relay_uncached(request, source, filename)
        download, fd = self.downloads.join(project, filename, source)
        request[CACHE_OUTCOME] = "coalesced" if coalesced else "miss"
        try:
            await download.started.wait()
            if isinstance(download.error, DiskFull) and download.written == 0:
                request[CACHE_OUTCOME] = "uncached"
                return await self._relay_uncached(request, source, filename)
            if request.method == "GET" and "Range" in request.headers:
                relayed = await self._relay_range_if_behind(request, download)
                if relayed is not None:
                    return relayed
            return await stream_download(request, download, fd)
        finally:
            close_quietly(fd)

    async def _relay_uncached(
        self, request: web.Request, source: FileSource, filename: str
    ) -> web.StreamResponse:
        """Pass a file through without storing it (the disk is full), still verified: the
        final chunk goes out only once the hash matches."""
        forwarded = {"Range": request.headers["Range"]} if "Range" in request.headers else {}
        async with self.upstream.open_file(source.url, headers=forwarded) as upstream_response:
            if upstream_response.status not in (200, 206):
                raise web.HTTPBadGateway(text=f"upstream answered {upstream_response.status}\n")
            response = web.StreamResponse(status=upstream_response.status)
            for header in ("Content-Length", "Content-Range"):
                if header in upstream_response.headers:
                    response.headers[header] = upstream_response.headers[header]
            response.headers["Content-Type"] = content_type_for(filename)
            response.headers["Accept-Ranges"] = "bytes"
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            verify = upstream_response.status == 200 and source.hash_value is not None
            digest = hashlib.new(source.hash_name or "sha256")
            held = b""
            async for chunk in upstream_response.content.iter_chunked(_READ_CHUNK):
                digest.update(chunk)
                if held:
                    await response.write(held)
                held = chunk
            if verify and digest.hexdigest() != source.hash_value:
                return _abort(request, response, f"{filename} does not match its hash")
            await response.write(held)
            await response.write_eof()
            return response

    async def _serve_extracted(
        self, request: web.Request, project: str, filename: str
    ) -> web.StreamResponse:
        """Metadata the proxy advertised but no longer holds (evicted): extract it again from
        the wheel, downloading the wheel first if that was evicted too."""
        wheel = filename.removesuffix(METADATA_SUFFIX)
        source = await self.pages.find_file(project, wheel)
        if source is None or not source.extract_metadata:
            raise web.HTTPNotFound(text=f"{project} has no file {filename}\n")
        stored = await self.store.find_file(project, wheel)
        if stored is None:
            download, fd = self.downloads.join(project, wheel, source)
            close_quietly(fd)
            assert download.task is not None
            await asyncio.shield(download.task)
            if download.error is not None:
                raise download.error
            stored = await self.store.find_file(project, wheel)
        data = stored and await extract_and_store(self.store, project, wheel, stored.path)
        if data is None:
            raise web.HTTPNotFound(text=f"no metadata can be read from {wheel}\n")
        request[CACHE_OUTCOME] = "extracted"
        return web.Response(
            body=data,
            headers={"Content-Type": content_type_for(filename), "Cache-Control": IMMUTABLE},
        )

    async def _relay_range_if_behind(
        self, request: web.Request, download: Download
    ) -> web.StreamResponse | None:
        """Installers range-read a wheel's tail for its metadata: rather than wait for the
        whole file, ask the upstream for just that range while the full download goes on.
        Small ranges are fetched once per download and shared, so concurrent cold clients
        cost the upstream one tail, not one each."""
        await download.started.wait()
        try:
            wanted = parse_range(request.headers["Range"], download.total)
        except web.HTTPRequestRangeNotSatisfiable:
            return None
        if wanted is None or download.written >= wanted[1] or download.error is not None:
            return None
        first, last = wanted[0], wanted[1] - 1
        if last - first + 1 > SHARED_RANGE_LIMIT:
            return await self._stream_range(request, download, first, last)
        fetched, joined = download.shared_range(
            first, last, lambda: self._fetch_range(download.source.url, first, last)
        )
        data = await fetched
        if data is None:
            return None  # the upstream would not give the range: wait for the download
        request[CACHE_OUTCOME] = "coalesced-range" if joined else "miss-range"
        return web.Response(status=206, body=data, headers=_range_headers(download, first, last))

    async def _fetch_range(self, url: str, first: int, last: int) -> bytes | None:
        try:
            async with self.upstream.open_file(
                url, headers={"Range": f"bytes={first}-{last}"}
            ) as upstream_response:
                if upstream_response.status != 206:
                    return None
                data = await upstream_response.content.read()
        except UpstreamError as exc:
            log.info("range %d-%d of %s not fetched: %s", first, last, url, exc)
            return None
        return data if len(data) == last - first + 1 else None

    async def _stream_range(
        self, request: web.Request, download: Download, first: int, last: int
    ) -> web.StreamResponse | None:
        async with self.upstream.open_file(
            download.source.url, headers={"Range": f"bytes={first}-{last}"}
        ) as upstream_response:
            if upstream_response.status != 206:
                return None
            response = web.StreamResponse(status=206, headers=_range_headers(download, first, last))
            response.content_length = last - first + 1
            await response.prepare(request)
            sent = 0
            async for chunk in upstream_response.content.iter_chunked(_READ_CHUNK):
                sent += len(chunk)
                await response.write(chunk)
            if sent != last - first + 1:
                return _abort(request, response, "upstream range was cut short")
            await response.write_eof()
            request[CACHE_OUTCOME] = "miss-range"
            return response


def _range_headers(download: Download, first: int, last: int) -> dict[str, str]:
    return {
        "Content-Type": content_type_for(download.filename),
        "Accept-Ranges": "bytes",
        "Content-Range": f"bytes {first}-{last}/{download.total}",
    }


def _stored_response(request: web.Request, stored: StoredFile, filename: str) -> web.FileResponse:
    """sendfile from the store; aiohttp answers HEAD, Range and conditional requests."""
    request[CACHE_OUTCOME] = "hit"
    if "Range" not in request.headers:
        request[STORED_SIZE] = stored.size
    return web.FileResponse(
        stored.path,
        headers={
            "Content-Type": content_type_for(filename),
            "Cache-Control": IMMUTABLE,
            "ETag": f'"{stored.sha256}"',
        },
    )


async def stream_download(request: web.Request, download: Download, fd: int) -> web.StreamResponse:
    """Answer from a download in progress: headers as soon as the upstream's arrive, bytes as
    they land on disk, and the file's last byte only once the whole file is verified, so a
    corrupt or cut-off transfer can never look complete to the client."""
    await download.started.wait()
    if download.error is not None and download.written == 0:
        if download.error.status == 404:
            raise web.HTTPNotFound(text=f"upstream has no {download.filename}\n")
        raise web.HTTPBadGateway(text=f"{download.error}\n")
    total = download.total
    byte_range = parse_range(request.headers.get("Range"), total)
    start, end = byte_range or (0, total)
    response = web.StreamResponse(status=206 if byte_range else 200)
    response.headers["Content-Type"] = content_type_for(download.filename)
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Cache-Control"] = IMMUTABLE
    if end is not None:
        response.content_length = end - start
    if byte_range:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    position = start
    while end is None or position < end:
        # Hold back the newest byte until the whole file is verified: that is always the
        # file's last byte by the time the download ends.
        releasable = download.written if download.committed else download.written - 1
        limit = releasable if end is None else min(releasable, end)
        if position < limit:
            size = min(limit - position, _STREAM_CHUNK)
            data = await asyncio.to_thread(os.pread, fd, size, position)
            if not data:
                break
            await response.write(data)
            position += len(data)
            continue
        if download.error is not None:
            return _abort(request, response, str(download.error))
        if download.committed and end is None:
            break
        await download.wait_changed()
    await response.write_eof()
    return response


def _abort(request: web.Request, response: web.StreamResponse, reason: str) -> web.StreamResponse:
    """Cut the connection so the client sees an incomplete transfer, never a clean end."""
    log.warning("aborted %s: %s", request.path, reason)
    request[CACHE_OUTCOME] = "aborted"
    if request.transport is not None:
        request.transport.abort()
    return response

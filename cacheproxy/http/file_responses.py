"""File answers turned into HTTP responses: headers, sendfile, streaming, cut-offs."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from email.utils import formatdate

from aiohttp import web

from cacheproxy.errors import UpstreamError
from cacheproxy.files.ranges import Outcome
from cacheproxy.files.service import (
    Answer,
    FileAnswer,
    FromStore,
    InMemory,
    NotFound,
    Refused,
    Streamed,
)
from cacheproxy.http.keys import CACHE_OUTCOME, STORED_SIZE

log = logging.getLogger(__name__)

IMMUTABLE = "public, max-age=31536000, immutable"
# Where sendfile cannot be: reads of a stored file this large (each held until it is sent).
_SENDFILE_FALLBACK_CHUNK = 64 * 1024
# Through TLS each write is encrypted whole into OpenSSL's outgoing buffer before any of it is
# sent, and that buffer keeps its largest size for the life of the connection: bodies go in
# pieces of this size, so a connection holds one piece, never a whole read.
TLS_PIECE_BYTES = 16 * 1024


def content_type_for(filename: str) -> str:
    # Never a content type with an encoding: clients must get the exact bytes the hash covers.
    if filename.endswith(".metadata"):
        return "text/plain; charset=utf-8"
    if filename.endswith(".provenance"):
        return "application/json"
    return "application/octet-stream"


def refusal(status: int, reason: str) -> web.HTTPException:
    """A refusal with its reason in the body and in the status line, where pip shows it."""
    error = web.HTTPGone if status == 410 else web.HTTPForbidden
    phrase = reason.encode("latin-1", "replace").decode("latin-1")
    return error(text=f"{reason}\n", reason=" ".join(phrase.split()))


def _headers(answer: Answer) -> dict[str, str]:
    headers = {"Accept-Ranges": "bytes", "Cache-Control": IMMUTABLE}
    if answer.etag:
        headers["ETag"] = answer.etag
    if answer.last_modified is not None:
        headers["Last-Modified"] = formatdate(answer.last_modified, usegmt=True)
    decision = answer.decision
    if decision.outcome is Outcome.PARTIAL and decision.end is not None:
        headers["Content-Range"] = f"bytes {decision.start}-{decision.end - 1}/{answer.total}"
    elif decision.outcome is Outcome.UNSATISFIABLE:
        headers["Content-Range"] = f"bytes */{answer.total}"
    return headers


async def respond(request: web.Request, answer: FileAnswer) -> web.StreamResponse:
    if isinstance(answer, NotFound):
        if answer.outcome:
            request[CACHE_OUTCOME] = answer.outcome
        raise web.HTTPNotFound(text=f"{answer.reason}\n")
    if isinstance(answer, Refused):
        request[CACHE_OUTCOME] = answer.outcome
        raise refusal(answer.status, answer.reason)
    request[CACHE_OUTCOME] = answer.outcome
    headers = _headers(answer)
    # Set here, not by the metrics middleware: these responses are sent before it sees them.
    headers["X-Cache"] = answer.outcome
    if not answer.has_body:
        if isinstance(answer, Streamed) and answer.body is not None:
            await answer.body.aclose()
        return web.Response(status=answer.decision.status, headers=headers)
    headers["Content-Type"] = content_type_for(answer.filename)
    if isinstance(answer, InMemory):
        return web.Response(status=answer.decision.status, body=answer.data, headers=headers)
    if isinstance(answer, FromStore):
        if answer.decision.outcome is Outcome.WHOLE:
            request[STORED_SIZE] = answer.length or 0
        response: web.StreamResponse = _AnswerResponse(answer, headers, _send_stored)
    elif isinstance(answer, Streamed):
        response = _AnswerResponse(answer, headers, _stream)
    else:  # a body-less answer to a HEAD: the headers a GET would have had
        response = web.StreamResponse(status=answer.decision.status, headers=headers)
    if answer.length is not None:
        response.content_length = answer.length
    return response


class _AnswerResponse(web.StreamResponse):
    """Sends its body when aiohttp prepares it, after the middlewares have seen the answer
    (as FileResponse does), so metrics and logs are counted before the client has the bytes."""

    def __init__(self, answer: Answer, headers: dict[str, str], send) -> None:
        super().__init__(status=answer.decision.status, headers=headers)
        self._answer = answer
        self._send = send

    async def prepare(self, request: web.BaseRequest):
        if self.prepared:
            return await super().prepare(request)
        return await self._send(request, self, self._answer)

    async def start(self, request: web.BaseRequest):
        return await super().prepare(request)


async def _stream(request: web.BaseRequest, response: _AnswerResponse, answer: Streamed):
    """Headers at once, bytes as they arrive; a body that fails mid-way cuts the connection
    so the client sees an incomplete transfer, never a clean end."""
    assert answer.body is not None
    try:
        writer = await response.start(request)
        if request.method == "HEAD":
            return writer
        try:
            if not await _sent_by_sendfile(request, answer):
                tls = _is_tls(request)
                async for chunk in answer.body.chunks():
                    await _write(response, chunk, tls)
                    del chunk  # not held while the next one is awaited (downloads.py)
        except UpstreamError as exc:
            _abort(request, str(exc))
            return writer
        await response.write_eof()
        return writer
    finally:
        await answer.body.aclose()


async def _sent_by_sendfile(request: web.BaseRequest, answer: Streamed) -> bool:
    """A running download's bytes sent from its staging file as they land, by sendfile:
    hundreds of clients waiting on slow downloads then hold no copies of them in memory.
    False when this cannot be (a body of unknown length is sent chunked; TLS), with nothing
    sent yet."""
    spans, fd = getattr(answer.body, "spans", None), getattr(answer.body, "fd", None)
    transport = request.transport
    if spans is None or fd is None or answer.length is None or transport is None:
        return False
    if transport.get_extra_info("sslcontext") is not None:
        return False
    loop = asyncio.get_running_loop()
    with os.fdopen(os.dup(fd), "rb") as fobj:
        async for offset, count in spans():
            # Waits for what the transport holds (the headers, the last part) to go first.
            await loop.sendfile(transport, fobj, offset, count)
    return True


async def _send_stored(request: web.BaseRequest, response: _AnswerResponse, answer: FromStore):
    """sendfile from the store, falling back to reads where the transport cannot (TLS)."""
    decision, count = answer.decision, answer.length or 0
    try:
        fobj = await asyncio.to_thread(open, answer.path, "rb")
    except FileNotFoundError:  # evicted or purged since it was found: cut, the client retries
        _abort(request, f"{answer.filename} was removed from the cache meanwhile")
        return None
    try:
        writer = await response.start(request)
        if request.method == "HEAD" or count == 0:
            return writer
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        if _is_tls(request):
            # No sendfile through TLS; asyncio's own fallback reads 16 KiB at a time, each
            # read a round trip to a thread: several times slower than these reads.
            await _send_by_reads(response, fobj.fileno(), decision.start, count)
        else:
            try:
                await asyncio.get_running_loop().sendfile(transport, fobj, decision.start, count)
            except NotImplementedError:
                await _send_by_reads(response, fobj.fileno(), decision.start, count)
        await response.write_eof()
        return writer
    finally:
        await asyncio.to_thread(fobj.close)


async def _send_by_reads(response: web.StreamResponse, fd: int, start: int, count: int) -> None:
    """Where sendfile cannot be (TLS): what the page cache holds read at once, the rest in a
    thread; written in TLS_PIECE_BYTES pieces."""
    position, end = start, start + count
    while position < end:
        size = min(_SENDFILE_FALLBACK_CHUNK, end - position)
        data = _read_cached(fd, size, position)
        if data is None:
            data = await asyncio.to_thread(os.pread, fd, size, position)
        if not data:
            raise ConnectionResetError("stored file shrank while it was sent")
        await _write(response, data, tls=True)
        position += len(data)
        del data  # not held while the next read is awaited


# A read that fails rather than wait for the disk (Linux 4.14); None elsewhere, or once the
# file system has said it cannot.
_nowait: list[int] = [os.RWF_NOWAIT] if hasattr(os, "RWF_NOWAIT") else []


def _read_cached(fd: int, size: int, position: int) -> bytes | bytearray | None:
    """Up to size bytes at position that the page cache holds, read without waiting for the
    disk (a warm cache's files then cost no round trip to a thread each); None when none of
    them is there, at the end of the file, or where such reads cannot be made."""
    if not _nowait:
        return None
    buffer = bytearray(size)
    try:
        got = os.preadv(fd, [buffer], position, _nowait[0])
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        _nowait.clear()
        return None
    if got == 0:
        return None
    return buffer if got == size else buffer[:got]


def _is_tls(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is not None and transport.get_extra_info("sslcontext") is not None


async def _write(response: web.StreamResponse, data: bytes | bytearray, tls: bool) -> None:
    if not tls or len(data) <= TLS_PIECE_BYTES:
        await response.write(data)
        return
    view = memoryview(data)
    for start in range(0, len(view), TLS_PIECE_BYTES):
        await response.write(view[start : start + TLS_PIECE_BYTES])


def _abort(request: web.BaseRequest, reason: str) -> None:
    log.warning("aborted %s: %s", request.path, reason)
    request[CACHE_OUTCOME] = "aborted"
    if request.transport is not None:
        request.transport.abort()

"""Upstream file bodies passed straight through to one client, still checked.

Used when a file is not cached on the way (the disk is full) and for large ranges asked for
ahead of a running download. The last chunk is held back until the length and, for a whole
file, the hash check out, so a corrupt or cut-off transfer never looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator

from cacheproxy.errors import DownloadFailed, UpstreamError
from cacheproxy.protocol.page import FileSource
from cacheproxy.upstream import Upstream, UpstreamBody

log = logging.getLogger(__name__)


class RelayedBody:
    def __init__(
        self,
        stack: contextlib.AsyncExitStack,
        body: UpstreamBody,
        length: int | None,
        source: FileSource | None,
    ) -> None:
        self._stack = stack
        self._body = body
        self._length = length
        self._source = source if source is not None and source.hash_value else None

    async def chunks(self) -> AsyncIterator[bytes]:
        digest = hashlib.new(self._source.hash_name or "sha256") if self._source else None
        held, received = b"", 0
        async for chunk in self._body.chunks:
            received += len(chunk)
            if self._length is not None and received > self._length:
                raise DownloadFailed(f"upstream sent more than the {self._length} bytes asked for")
            if digest is not None:
                digest.update(chunk)
            if held:
                yield held
            held = chunk
        if self._length is not None and received != self._length:
            raise DownloadFailed(f"upstream sent {received} bytes of {self._length}")
        if digest is not None and self._source and digest.hexdigest() != self._source.hash_value:
            raise DownloadFailed("the file does not match its hash")
        if held:
            yield held

    async def aclose(self) -> None:
        await self._stack.aclose()


async def open_relay(
    upstream: Upstream,
    url: str,
    span: tuple[int, int] | None,
    source: FileSource | None,
) -> tuple[RelayedBody, int | None] | None:
    """The upstream's body for the whole file (hash-checked against source) or for the
    byte span [start, end); None when the upstream will not give that. With the whole
    file, also its length as the upstream states it."""
    stack = contextlib.AsyncExitStack()
    headers = {"Range": f"bytes={span[0]}-{span[1] - 1}"} if span else {}
    try:
        body = await stack.enter_async_context(upstream.open_file(url, headers=headers))
        if body.status != (206 if span else 200):
            await stack.aclose()
            if body.status == 404 or span is not None:
                return None
            raise DownloadFailed(f"upstream answered {body.status}", status=body.status)
    except BaseException:
        await stack.aclose()
        raise
    length = span[1] - span[0] if span else body.content_length
    return RelayedBody(stack, body, length, None if span else source), body.content_length


async def fetch_range(upstream: Upstream, url: str, start: int, end: int) -> bytes | None:
    """Bytes [start, end) of a file, from one upstream range request; None if refused."""
    try:
        opened = await open_relay(upstream, url, (start, end), None)
        if opened is None:
            return None
        relayed, _ = opened
        try:
            return b"".join([chunk async for chunk in relayed.chunks()])
        finally:
            await relayed.aclose()
    except UpstreamError as exc:
        log.info("range %d-%d of %s not fetched: %s", start, end - 1, url, exc)
        return None

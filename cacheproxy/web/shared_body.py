"""A response whose body is a bytes object shared by every client it is sent to (a rendered
page), sent a slice at a time.

web.Response hands the whole body to the transport at once, and the transport copies what a
slow client has not taken yet into its own buffer: a megabyte per slow client of a large
page. Slices, each waited on until the transport's buffer has drained, keep that to about one
slice per client, whatever the number of clients.
"""

from __future__ import annotations

from aiohttp import web

SLICE_BYTES = 64 * 1024


class SharedBodyResponse(web.StreamResponse):
    def __init__(self, body: bytes, *, status: int = 200, headers: dict[str, str]) -> None:
        super().__init__(status=status, headers=headers)
        self._shared = body
        self.content_length = len(body)

    async def prepare(self, request: web.BaseRequest):
        if self.prepared:
            return await super().prepare(request)
        writer = await super().prepare(request)
        if request.method != "HEAD":
            view = memoryview(self._shared)
            for start in range(0, len(view), SLICE_BYTES):
                # write() waits for the transport to drain once its buffer is over 64 KiB.
                await self.write(view[start : start + SLICE_BYTES])
        await self.write_eof()
        return writer

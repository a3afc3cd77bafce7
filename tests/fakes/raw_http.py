"""An HTTP server below aiohttp's level, for bodies no well-behaved server would send."""

from __future__ import annotations

import asyncio


async def start_unframed_server(body: bytes) -> tuple[asyncio.AbstractServer, str]:
    """Answers every request with 200 and body, with neither Content-Length nor chunked
    encoding: the end of the body is the connection closing (HTTP/1.0 style)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n")
        writer.write(b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/files/"

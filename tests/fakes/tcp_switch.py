"""A TCP relay that can be switched off: an object store that goes down and comes back."""

from __future__ import annotations

import asyncio
import contextlib


class TcpSwitch:
    """Forwards 127.0.0.1:port to target while up; while down, every connection is cut at
    once (the client sees a reset). connections counts every connection a client opened."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.up = True
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> TcpSwitch:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    def set_down(self) -> None:
        self.up = False
        for writer in list(self._open):
            writer.close()  # pooled keep-alive connections die with the store

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if not self.up:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._open.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(writer)
            with contextlib.suppress(OSError):
                writer.close()

    async def close(self) -> None:
        self.set_down()
        self._server.close()
        await self._server.wait_closed()

"""A throttled relay in front of an index: an internet-like link on a machine whose index is close.

Every request waits --latency-ms before it is answered, and all response bodies share one link of
--mbps (a token bucket), so concurrent downloads divide the bandwidth as they would on a real
line. Pages are relayed with their file URLs rewritten to point back at the relay, so files come
through the throttle too. Requests and body bytes are counted; `GET /_relay/stats` shows them and
`POST /_relay/reset` zeroes them.

With --store DIR the relay keeps what it fetched (pages in memory, files in DIR), so repeated
benchmark runs cost only the simulated link, not the real upstream's variance.

    .venv/bin/python benchmarks/relay.py --upstream URL [--latency-ms 50] [--mbps 100] [--port N]

Import `start_relay()` to run it inside a benchmark's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

from aiohttp import ClientSession, ClientTimeout, web

CHUNK = 64 * 1024
JSON_V1 = "application/vnd.pypi.simple.v1+json"
HREF = re.compile(rb'href="([^"]+)"')


class Link:
    """One shared line: each chunk waits until the line has carried the chunks before it."""

    def __init__(self, mbps: float) -> None:
        self.bytes_per_second = mbps * 1e6 / 8 if mbps > 0 else 0.0
        self.free_at = 0.0

    async def carry(self, size: int) -> None:
        if not self.bytes_per_second:
            return
        now = time.monotonic()
        self.free_at = max(self.free_at, now) + size / self.bytes_per_second
        await asyncio.sleep(self.free_at - now)


@dataclass
class RelayStats:
    requests: int = 0
    page_requests: int = 0
    file_requests: int = 0
    body_bytes: int = 0
    file_bytes: int = 0
    by_path: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "page_requests": self.page_requests,
            "file_requests": self.file_requests,
            "body_bytes": self.body_bytes,
            "file_bytes": self.file_bytes,
            # whole-body GETs of the same URL: 1 when every file crossed the link once
            "max_downloads_of_one_file": max(
                (n for p, n in self.by_path.items() if p.startswith("/files/")), default=0
            ),
        }


def _token(url: str) -> str:
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def _untoken(token: str) -> str:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


def _relayed(url: str) -> str:
    name = url.split("#", 1)[0].rsplit("/", 1)[-1]
    fragment = "#" + url.split("#", 1)[1] if "#" in url else ""
    return f"/files/{_token(url.split('#', 1)[0])}/{name}{fragment}"


METADATA_ATTRS = re.compile(rb'\s+data-(?:core|dist-info)-metadata="[^"]*"')


def rewrite_page(
    body: bytes, content_type: str, page_url: str, strip_metadata: bool = False
) -> bytes:
    """Point every file URL of a page at the relay (absolute upstream URLs become /files/...);
    with strip_metadata, drop PEP 658 metadata, like an index that serves none."""
    if "json" in content_type:
        page = json.loads(body)
        for entry in page.get("files", []):
            entry["url"] = _relayed(urljoin(page_url, entry["url"]))
            if strip_metadata:
                entry.pop("core-metadata", None)
                entry.pop("data-dist-info-metadata", None)
        return json.dumps(page).encode()
    if strip_metadata:
        body = METADATA_ATTRS.sub(b"", body)
    return HREF.sub(
        lambda m: b'href="' + _relayed(urljoin(page_url, m.group(1).decode())).encode() + b'"',
        body,
    )


class Relay:
    def __init__(
        self,
        upstream: str,
        latency: float,
        mbps: float,
        store: Path | None = None,
        strip_metadata: bool = False,
    ) -> None:
        self.strip_metadata = strip_metadata
        self.upstream = upstream.rstrip("/") + "/"
        self.latency = latency
        self.link = Link(mbps)
        self.store = store
        self._keeping: dict[str, asyncio.Lock] = {}  # URLs being fetched whole for ranges
        self.pages: dict[tuple[str, str], tuple[int, str, bytes]] = {}
        # Each kept page gzipped once, as a CDN serves it: compressing a large page for every
        # request held the relay's event loop, and every other transfer on the link, for tens
        # of milliseconds each time.
        self.gzipped: dict[tuple[str, str], bytes] = {}
        self.stats = RelayStats()
        self.session: ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_relay/stats", self.show_stats)
        app.router.add_post("/_relay/reset", self.reset)
        app.router.add_get("/files/{token}/{name}", self.file)
        app.router.add_get("/simple/{tail:.*}", self.page)
        app.cleanup_ctx.append(self._session)
        return app

    async def _session(self, app: web.Application):
        timeout = ClientTimeout(total=None, sock_read=120)
        self.session = ClientSession(timeout=timeout, trust_env=True)
        yield
        await self.session.close()

    async def show_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    async def reset(self, request: web.Request) -> web.Response:
        self.stats = RelayStats()
        return web.json_response({})

    def _count(self, request: web.Request) -> None:
        self.stats.requests += 1
        if request.method == "GET" and "Range" not in request.headers:
            self.stats.by_path[request.path] = self.stats.by_path.get(request.path, 0) + 1

    async def _send(self, request: web.Request, response: web.StreamResponse, body) -> None:
        await response.prepare(request)
        if request.method == "HEAD":
            await response.write_eof()
            return
        async for chunk in body:
            await self.link.carry(len(chunk))
            self.stats.body_bytes += len(chunk)
            if request.path.startswith("/files/"):
                self.stats.file_bytes += len(chunk)
            await response.write(chunk)
        await response.write_eof()

    async def page(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        self.stats.page_requests += 1
        await asyncio.sleep(self.latency)
        accept = request.headers.get("Accept", "text/html")
        url = self.upstream + request.match_info["tail"]
        key = (url, accept)
        if key not in self.pages or self.store is None:
            async with self.session.get(url, headers={"Accept": accept}) as upstream:
                body = await upstream.read()
                content_type = upstream.headers.get("Content-Type", "text/html")
                if upstream.status == 200:
                    body = rewrite_page(body, content_type, str(upstream.url), self.strip_metadata)
                self.pages[key] = (upstream.status, content_type, body)
                self.gzipped.pop(key, None)
        status, content_type, body = self.pages[key]
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            if key not in self.gzipped:
                self.gzipped[key] = await asyncio.to_thread(gzip.compress, body, 6)
            body, encoding = self.gzipped[key], {"Content-Encoding": "gzip"}
        else:
            encoding = {}
        response = web.StreamResponse(
            status=status, headers={"Content-Type": content_type, **encoding}
        )
        response.content_length = len(body)

        async def chunks():
            for start in range(0, len(body), CHUNK):
                yield body[start : start + CHUNK]

        await self._send(request, response, chunks())
        return response

    async def file(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        self.stats.file_requests += 1
        await asyncio.sleep(self.latency)
        original = _untoken(request.match_info["token"])
        # <file>.metadata and <file>.provenance sit beside the file they describe.
        suffix = request.match_info["name"][len(original.rsplit("/", 1)[-1]) :]
        url = original + suffix
        if self.strip_metadata and suffix == ".metadata":
            return web.Response(status=404, text="this index serves no metadata")
        headers = {k: v for k in ("Range",) if (v := request.headers.get(k))}
        cached = self._stored(url)
        if cached is not None and headers and request.method == "GET":
            # Ranges come from the kept copy too (fetched whole the first time, in the untimed
            # priming runs), so every timed range read costs the simulated link alone.
            if not cached.exists():
                await self._keep_whole(url, cached)
            span = _one_range(headers["Range"], cached.stat().st_size)
            if span is not None:
                return await self._send_range(request, cached, *span)
        if cached is not None and cached.exists() and not headers:
            response = web.StreamResponse(
                headers={"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            )
            response.content_length = cached.stat().st_size
            await self._send(request, response, self._read(cached))
            return response
        async with self.session.request(request.method, url, headers=headers) as upstream:
            response = web.StreamResponse(status=upstream.status)
            relayed = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "ETag")
            for name in relayed:
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            keep = upstream.status == 200 and cached is not None and request.method == "GET"
            partial = cached.with_name(f"{cached.name}.{id(request)}.part") if keep else None
            sink = partial.open("wb") if partial else None
            complete = False
            try:

                async def body():
                    async for chunk in upstream.content.iter_chunked(CHUNK):
                        if sink:
                            sink.write(chunk)
                        yield chunk

                await self._send(request, response, body())
                complete = True
            finally:
                if sink:
                    sink.close()
                    if complete:
                        partial.replace(cached)
                    else:
                        partial.unlink()
        return response

    async def _keep_whole(self, url: str, cached: Path) -> None:
        lock = self._keeping.setdefault(url, asyncio.Lock())
        async with lock:
            if await asyncio.to_thread(cached.exists):
                return
            partial = cached.with_name(f"{cached.name}.whole.part")
            async with self.session.get(url) as upstream:
                upstream.raise_for_status()
                with partial.open("wb") as sink:
                    async for chunk in upstream.content.iter_chunked(CHUNK):
                        sink.write(chunk)
            partial.replace(cached)

    async def _send_range(
        self, request: web.Request, cached: Path, start: int, end: int
    ) -> web.StreamResponse:
        size = (await asyncio.to_thread(cached.stat)).st_size
        response = web.StreamResponse(
            status=206,
            headers={
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
                "Content-Range": f"bytes {start}-{end - 1}/{size}",
            },
        )
        response.content_length = end - start

        async def chunks():
            with cached.open("rb") as f:
                f.seek(start)
                left = end - start
                while left > 0 and (chunk := await asyncio.to_thread(f.read, min(CHUNK, left))):
                    left -= len(chunk)
                    yield chunk

        await self._send(request, response, chunks())
        return response

    def _stored(self, url: str) -> Path | None:
        if self.store is None:
            return None
        return self.store / hashlib.sha256(url.encode()).hexdigest()

    @staticmethod
    async def _read(path: Path):
        with path.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                yield chunk


def _one_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end_exclusive) of a single `bytes=` range, None for anything else."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec or "-" not in spec:
        return None
    first, _, last = spec.strip().partition("-")
    if not first:
        return (max(0, size - int(last)), size) if last.isdigit() and int(last) else None
    if not first.isdigit() or int(first) >= size:
        return None
    end = min(int(last) + 1, size) if last.isdigit() else size
    return (int(first), end) if end > int(first) else None


async def start_relay(
    upstream: str,
    *,
    latency_ms: float = 50,
    mbps: float = 100,
    store: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    strip_metadata: bool = False,
) -> tuple[web.AppRunner, str, Relay]:
    """Start a relay in this event loop; returns (runner, index URL ending in /simple/, relay)."""
    if store is not None:
        await asyncio.to_thread(store.mkdir, parents=True, exist_ok=True)
    relay = Relay(upstream, latency_ms / 1000, mbps, store, strip_metadata)
    runner = web.AppRunner(relay.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    return runner, f"http://{host}:{bound}/simple/", relay


async def _serve(args: argparse.Namespace) -> None:
    runner, url, _ = await start_relay(
        args.upstream,
        latency_ms=args.latency_ms,
        mbps=args.mbps,
        store=args.store,
        host=args.host,
        port=args.port,
        strip_metadata=args.strip_metadata,
    )
    print(f"relay: {url} ({args.latency_ms:g} ms per request, {args.mbps:g} Mbit/s)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="index URL (ending in /simple/)")
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--mbps", type=float, default=100, help="0: unthrottled")
    parser.add_argument("--store", type=Path, help="keep fetched files here between runs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--strip-metadata", action="store_true", help="serve no PEP 658 metadata")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()

"""Running the app: bind, announce the index URL, stop cleanly on SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from cacheproxy.config import Config
from cacheproxy.errors import CaError, ConfigError
from cacheproxy.http.app import create_app
from cacheproxy.http.connect import ConnectFront, connect_target
from cacheproxy.http.keys import CACHE_OUTCOME, CONFIG, METRICS, NAMED_INDEXES
from cacheproxy.http.tls import TlsFiles, reload_certificate
from cacheproxy.http.transparent import create_transparent_app
from cacheproxy.http.trust import open_authority, write_bundle
from cacheproxy.ops.redact import redact_request

if TYPE_CHECKING:  # cryptography is loaded only when the face opens its CA
    from cacheproxy.http.ca import CertificateAuthority

log = logging.getLogger("cacheproxy")

BACKLOG = 128  # aiohttp's sites' default


class AccessLogger(AbstractAccessLogger):
    """One line per request, with how the cache answered it."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        sent = response.content_length if response.content_length is not None else 0
        fields = {
            "method": request.method,
            "path": self.shown_path(request),
            "status": response.status,
            "outcome": request.get(CACHE_OUTCOME, "-"),
            "bytes": sent if request.method != "HEAD" else 0,
            "ms": round(time * 1000, 1),
        }
        self.logger.info(
            "%(method)s %(path)s %(status)s %(outcome)s %(bytes)sB %(ms).1fms", fields, extra=fields
        )

    def shown_path(self, request: web.BaseRequest) -> str:
        return str(request.rel_url)


class TransparentAccessLogger(AccessLogger):
    """The access log of intercepted connections: the URL the client asked for, with the
    CONNECT host (the same path means another thing on another host)."""

    def shown_path(self, request: web.BaseRequest) -> str:
        try:
            host, port = connect_target(request)
        except LookupError:
            return str(request.rel_url)
        shown = f"[{host}]" if ":" in host else host
        return f"https://{shown}{'' if port == 443 else f':{port}'}{request.rel_url}"


def describe_bad_request(message: str) -> str:
    """aiohttp's parser error on one line without the secrets it may quote: it shows the
    offending raw line (an Authorization header, say) above a ^ pointing into it."""
    parts = [line.strip() for line in message.splitlines()]
    return redact_request(" ".join(p for p in parts if p and p.strip("^ ")))


class OneLineBadRequests(logging.Filter):
    """aiohttp logs a malformed request with a traceback; one line says all there is."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.exc_info = "bad request: %s", None
            record.args = (describe_bad_request(exc.message),)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def root_url(host: str, port: int, scheme: str = "http") -> URL:
    """The proxy's root URL at the address it listens on, for people to use: a wildcard
    address shown as 127.0.0.1."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return URL.build(scheme=scheme, host=shown, port=port, path="/")


async def _listen(
    factory: Callable[[], asyncio.Protocol],
    config: Config,
    inherited: list[socket.socket],
    tls: ssl.SSLContext | None,
) -> tuple[list[asyncio.Server], URL]:
    """Listen on the sockets systemd passed, or bind the configured address; the servers and
    the root URL to announce. Every connection starts with the front door (http/connect.py)."""
    loop = asyncio.get_running_loop()
    scheme = "https" if tls else "http"
    if not inherited:
        server = await loop.create_server(
            factory, config.host, config.port, ssl=tls, backlog=BACKLOG, reuse_address=True
        )
        port = server.sockets[0].getsockname()[1]  # the real port when 0 was asked
        return [server], root_url(config.host, port, scheme)
    servers: list[asyncio.Server] = [
        await loop.create_server(factory, sock=sock, ssl=tls, backlog=BACKLOG) for sock in inherited
    ]
    addresses = [sock.getsockname() for server in servers for sock in server.sockets]
    roots = [root_url(address[0], address[1], scheme) for address in addresses]
    log.info(
        "listening on %d socket(s) from systemd: %s (--host and --port are not used)",
        len(inherited),
        ", ".join(str(root).removesuffix("/") for root in roots),
    )
    return servers, roots[0]


def _serving_line(config: Config, url: str) -> str:
    if config.offline:
        return (
            f"cacheproxy serving offline from cache {config.cache_dir} (only what is cached; "
            f"{config.public_upstream} is never asked); set UV_DEFAULT_INDEX={url} "
            "(or PIP_INDEX_URL)"
        )
    return (
        f"cacheproxy serving {config.public_upstream} from cache {config.cache_dir}; "
        f"set UV_DEFAULT_INDEX={url} (or PIP_INDEX_URL)"
    )


def _nothing_to_reload() -> None:
    log.info("SIGHUP: nothing to reload without a TLS certificate; still serving")


def _face_lines(
    config: Config, authority: CertificateAuthority | None, bundle: Path | None
) -> Iterator[str]:
    """What the start-up says of the transparent face: on for which hosts, with the CA's
    fingerprint and the bundle clients trust; or off."""
    if authority is None:
        yield "transparent HTTPS face off (--no-transparent): CONNECT is answered 405"
        if config.tunnel:
            yield "--tunnel is not used while the transparent face is off"
        return
    hosts = ", ".join(str(host) for host in config.package_hosts())
    yield (
        f"transparent HTTPS face on for {hosts}: set HTTPS_PROXY to this proxy and trust "
        f"{bundle} (cacheproxy env --transparent); CA SHA-256 {authority.fingerprint}"
    )
    if config.tunnel:
        yield "tunnelled untouched: " + ", ".join(str(host) for host in config.tunnel)


async def _open_authority(config: Config) -> tuple[CertificateAuthority | None, Path | None]:
    """The transparent face's CA (made on first start) and the trust bundle, in a thread:
    key generation and file writes. None with the face off. Raises ConfigError."""
    if not config.transparent:
        return None, None
    try:
        authority = await asyncio.to_thread(open_authority, config)
        bundle = await asyncio.to_thread(write_bundle, config, authority)
    except (CaError, ValueError, OSError) as exc:
        raise ConfigError(f"transparent face: {exc} (--no-transparent serves without it)") from None
    return authority, bundle


@dataclass
class Running:
    """A proxy listening: its root URL, its app and its front door (for tests)."""

    root: URL
    app: web.Application
    front: ConnectFront
    authority: CertificateAuthority | None
    bundle: Path | None
    servers: list[asyncio.Server]


def _runner(
    app: web.Application, config: Config, access_log_class: type[AccessLogger] = AccessLogger
) -> web.AppRunner:
    return web.AppRunner(
        app,
        access_log_class=access_log_class,
        access_log=logging.getLogger("cacheproxy.http.access"),
        handle_signals=False,
        shutdown_timeout=10,
        # Also bounds a client that trickles its request headers (slowloris).
        keepalive_timeout=config.idle_timeout,
    )


@contextlib.asynccontextmanager
async def running(
    config: Config,
    inherited: list[socket.socket] | None = None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Running]:
    """The proxy listening (its CA opened, its apps set up) until the block ends; then it
    stops taking connections, ends CONNECTs and tunnels, and lets requests in flight finish
    (up to the runners' shutdown timeout) before the apps are cleaned up."""
    aiohttp_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, OneLineBadRequests) for f in aiohttp_log.filters):
        aiohttp_log.addFilter(OneLineBadRequests())
    authority, bundle = await _open_authority(config)
    app = create_app(config)
    runner = _runner(app, config)
    await runner.setup()
    transparent: web.AppRunner | None = None
    servers: list[asyncio.Server] = []
    front: ConnectFront | None = None
    try:
        if authority is not None:
            transparent = _runner(create_transparent_app(app), config, TransparentAccessLogger)
            await transparent.setup()
        assert runner.server is not None
        front = ConnectFront(
            config,
            plain=runner.server,
            metrics=app[METRICS],
            transparent=transparent.server if transparent is not None else None,
            authority=authority,
            access_log_class=TransparentAccessLogger,
        )
        servers, root = await _listen(front.protocol, config, inherited or [], tls)
        yield Running(root, app, front, authority, bundle, servers)
    finally:
        for server in servers:
            server.close()
        if front is not None:
            await front.close()
        if transparent is not None:
            await transparent.cleanup()
        await runner.cleanup()


async def serve(
    config: Config,
    inherited: list[socket.socket] | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; with tls (made by web/tls.py: server_context from the
    config's files), HTTPS, its certificate read again on SIGHUP."""
    # Before the start-up line: whoever reads it may signal at once.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if tls is not None and config.tls_cert and config.tls_key:
        files = TlsFiles(config.tls_cert, config.tls_key)
        # On the loop, not in a thread: two small files, and the context is not changed
        # while a handshake elsewhere reads it.
        loop.add_signal_handler(signal.SIGHUP, reload_certificate, tls, files)
    else:
        # A service manager's "reload" sends SIGHUP; its default action would stop the proxy.
        loop.add_signal_handler(signal.SIGHUP, _nothing_to_reload)
    async with running(config, inherited, tls) as proxy:
        app, root = proxy.app, proxy.root
        started = time.monotonic()
        for line in _face_lines(config, proxy.authority, proxy.bundle):
            log.info("%s", line)
        log.info("%s", _serving_line(config, str(root.join(app.router["simple"].url_for()))))
        for name, sub in app[NAMED_INDEXES].items():
            log.info(
                "index %s serves %s at %s",
                name,
                sub[CONFIG].public_upstream,
                root.join(sub.router["simple"].url_for()),
            )
        await stop.wait()
        log.info("stopping after %.0fs", time.monotonic() - started)

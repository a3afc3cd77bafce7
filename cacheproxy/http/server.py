"""Running the app: bind, announce the index URL, stop cleanly on SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from cacheproxy.config import Config
from cacheproxy.http.app import create_app
from cacheproxy.http.keys import CACHE_OUTCOME, CONFIG, NAMED_INDEXES
from cacheproxy.http.tls import TlsFiles, reload_certificate
from cacheproxy.ops.redact import redact_request

log = logging.getLogger("cacheproxy")


class AccessLogger(AbstractAccessLogger):
    """One line per request, with how the cache answered it."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        sent = response.content_length if response.content_length is not None else 0
        fields = {
            "method": request.method,
            "path": str(request.rel_url),
            "status": response.status,
            "outcome": request.get(CACHE_OUTCOME, "-"),
            "bytes": sent if request.method != "HEAD" else 0,
            "ms": round(time * 1000, 1),
        }
        self.logger.info(
            "%(method)s %(path)s %(status)s %(outcome)s %(bytes)sB %(ms).1fms", fields, extra=fields
        )


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


async def _start_sites(
    runner: web.AppRunner,
    config: Config,
    inherited: list[socket.socket],
    tls: ssl.SSLContext | None,
) -> URL:
    """Listen on the sockets systemd passed, or bind the configured address; the root URL
    to announce."""
    scheme = "https" if tls else "http"
    if not inherited:
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True, ssl_context=tls)
        await site.start()
        port = runner.addresses[0][1]  # the real port when 0 was asked
        return root_url(config.host, port, scheme)
    for sock in inherited:
        await web.SockSite(runner, sock, ssl_context=tls).start()
    roots = [root_url(address[0], address[1], scheme) for address in runner.addresses]
    log.info(
        "listening on %d socket(s) from systemd: %s (--host and --port are not used)",
        len(inherited),
        ", ".join(str(root).removesuffix("/") for root in roots),
    )
    return roots[0]


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


async def serve(
    config: Config,
    inherited: list[socket.socket] | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; with tls (made by web/tls.py: server_context from the
    config's files), HTTPS, its certificate read again on SIGHUP."""
    inherited = inherited or []
    logging.getLogger("aiohttp.server").addFilter(OneLineBadRequests())
    app = create_app(config)
    runner = web.AppRunner(
        app,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("cacheproxy.http.access"),
        handle_signals=False,
        shutdown_timeout=10,
        # Also bounds a client that trickles its request headers (slowloris).
        keepalive_timeout=config.idle_timeout,
    )
    await runner.setup()
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
    try:
        root = await _start_sites(runner, config, inherited, tls)
        started = time.monotonic()
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
    finally:
        await runner.cleanup()

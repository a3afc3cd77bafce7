"""The listener's front door: the first bytes of a connection say which face answers it.

A plain HTTP request goes to the index face (aiohttp's own request handler for the root app,
exactly as if aiohttp had accepted the connection). A ``CONNECT host:port`` request is the
forward-proxy face, decided here:

- a package host (``Config.package_hosts``, on the port it names) is **intercepted**: ``200``,
  then TLS is terminated with the CA's certificate for the host and the decrypted connection is
  handed to the transparent app's request handler; ``connect_target(request)`` tells that app
  which host and port the client asked for;
- a ``--tunnel`` host is **tunnelled**: ``200``, then bytes are piped both ways untouched;
- anything else is **refused** with ``403`` and a one-line reason; a CONNECT that cannot be
  read is ``400``; without the right ``Proxy-Authorization`` (when client tokens are set) it is
  ``407``. Never an open proxy: no other host is ever connected to.

Everything a client can hold open is bounded by the idle timeout: the CONNECT head (and its
size, ``MAX_HEAD``), the TLS handshake, a tunnel without traffic; the index and transparent
faces' keep-alive is aiohttp's, set to the same timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import ssl
import time
import weakref
from asyncio import sslproto
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from cacheproxy.config import Config, HostPort
from cacheproxy.errors import CaError
from cacheproxy.http.access import presented_token, token_allowed
from cacheproxy.ops import runtime
from cacheproxy.ops.metrics import CONNECT_OUTCOMES, Metrics
from cacheproxy.ops.redact import redact_request

if TYPE_CHECKING:  # cryptography is loaded only when the face opens its CA
    from cacheproxy.http.ca import CertificateAuthority

log = logging.getLogger("cacheproxy")
access_log = logging.getLogger("cacheproxy.http.access")

OUTCOMES = CONNECT_OUTCOMES  # cacheproxy_connects_total{outcome}
# A CONNECT head is a request line and a few headers: anything longer is not a client's.
MAX_HEAD = 8 * 1024
# Bytes a tunnel holds for a side that does not read before it stops reading the other side.
TUNNEL_BUFFER = 256 * 1024
# The most an intercepted TLS connection reads from its socket at once (asyncio's own: 256 KiB),
# as for a plain connection (ops/runtime.py): requests are a few hundred bytes.
TLS_READ_BUFFER = runtime.SOCKET_READ_BYTES
# What an intercepted connection holds for a client that reads slower than its file arrives
# before the writer waits: encrypted bytes not yet taken by the socket (asyncio's own: 512 KiB,
# where a plain connection holds 64 KiB).
TLS_WRITE_BUFFER = 64 * 1024
# Problems that come with every connection of a misconfigured client are logged once per
# this many seconds, with how many were left out.
LOG_EVERY = 60.0
PROXY_CHALLENGE = 'Basic realm="cacheproxy"'

_CONNECT = b"CONNECT "
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_REQUEST_LINE = re.compile(rb"CONNECT (?P<target>[^ ]+) HTTP/(?P<version>1\.[01])")
_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,252})\.?")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REASONS = {
    200: "Connection established",
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}


# --- what the transparent app learns of its connection --------------------------------------


@dataclass(frozen=True)
class _Intercepted:
    host: str
    port: int
    refusal: str | None = None  # why every request on the connection is refused


# Keyed by the request handler of each intercepted connection; an entry goes with the
# connection's TLS transport.
_INTERCEPTED: dict[object, _Intercepted] = {}


def connect_target(request: web.BaseRequest) -> tuple[str, int]:
    """The host and port of the CONNECT that opened the request's connection: the host as the
    client wrote it (lower case, no brackets around an IPv6 address), the port as a number.
    Raises LookupError for a request that did not come through an intercepted CONNECT."""
    found = _INTERCEPTED.get(request.protocol)
    if found is None:
        raise LookupError("the request did not come through an intercepted CONNECT")
    return found.host, found.port


def _register(handler: object, tls: asyncio.BaseTransport, intercepted: _Intercepted) -> None:
    _INTERCEPTED[handler] = intercepted
    weakref.finalize(tls, _INTERCEPTED.pop, handler, None)


# --- reading a CONNECT ------------------------------------------------------------------------


class BadConnect(ValueError):
    """A CONNECT request that cannot be read; the message says why, on one line."""


@dataclass(frozen=True)
class ConnectRequest:
    host: str  # lower case, no trailing dot, no brackets
    port: int
    proxy_authorization: str | None

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_target(target: str) -> tuple[str, int]:
    """host:port or [v6]:port (authority form, nothing else) as (host, port); BadConnect."""
    if target.startswith("["):
        inside, bracket, rest = target[1:].partition("]")
        try:
            host = str(ipaddress.IPv6Address(inside))
        except ValueError:
            raise BadConnect(f"not an IPv6 address in the target {target[:100]!r}") from None
        if not bracket or not rest.startswith(":"):
            raise BadConnect(f"no port in the target {target[:100]!r} (HOST:PORT)")
        port_text = rest[1:]
    else:
        host, colon, port_text = target.rpartition(":")
        if not colon:
            raise BadConnect(f"no port in the target {target[:100]!r} (HOST:PORT)")
        if not _NAME.fullmatch(host) or ".." in host:
            raise BadConnect(f"not a host name in the target {target[:100]!r}")
        host = host.lower().rstrip(".")
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise BadConnect(f"not a port in the target {target[:100]!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise BadConnect(f"port {port} is out of range")
    return host, port


def parse_head(head: bytes) -> ConnectRequest:
    """The request line and headers of a CONNECT (without the blank line); BadConnect."""
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        shown = redact_request(lines[0][:100].decode("latin-1"))
        raise BadConnect(f"not a request line 'CONNECT HOST:PORT HTTP/1.1': {shown!r}")
    host, port = parse_target(match["target"].decode("latin-1"))
    authorization = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise BadConnect("a header line that is not 'Name: value'")
        if name.lower() == b"proxy-authorization" and authorization is None:
            authorization = value.strip().decode("latin-1")
    return ConnectRequest(host, port, authorization)


# --- what to do with it -----------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    action: str  # "intercept", "tunnel" or "refuse"
    reason: str = ""


def decide(
    host: str, port: int, *, packages: Sequence[HostPort], tunnels: Sequence[HostPort]
) -> Decision:
    """Intercept a package host on its port, tunnel a --tunnel host on its port, refuse
    everything else with the reason."""
    if any(h.matches(host, port) for h in packages):
        return Decision("intercept")
    if any(h.matches(host, port) for h in tunnels):
        return Decision("tunnel")
    shown = f"[{host}]" if ":" in host else host
    for kind, hosts in (("package", packages), ("--tunnel", tunnels)):
        ports = sorted({h.port for h in hosts if h.matches(host, h.port)})
        if ports:
            allowed = ", ".join(str(p) for p in ports)
            return Decision(
                "refuse", f"port {port} is not allowed for {kind} host {shown} (only {allowed})"
            )
    return Decision("refuse", f"{shown} is not a package host of this proxy nor a --tunnel host")


def _same_host(sni: str, host: str) -> bool:
    return sni.lower().rstrip(".") == host.lower().rstrip(".")


# SNI of each server-side TLS object, as the client sent it (None: it sent none).
_SNI: weakref.WeakKeyDictionary[object, str | None] = weakref.WeakKeyDictionary()


def _record_sni(ssl_object: object, server_name: str | None, context: ssl.SSLContext) -> None:
    _SNI[ssl_object] = server_name


class _RateLimited:
    """A warning logged once per LOG_EVERY seconds per kind, with how many were left out."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        self._last[kind] = now
        left_out = self._left_out.pop(kind, 0)
        suffix = f" ({left_out} more like it since the last such line)" if left_out else ""
        log.warning(message + "%s; lines like it are left out for %.0fs", *args, suffix, self.every)


# --- the front --------------------------------------------------------------------------------


class ConnectFront:
    """Makes the protocol of every accepted connection (``front.protocol`` is the factory for
    ``loop.create_server``) and holds what they share."""

    def __init__(
        self,
        config: Config,
        *,
        plain: Callable[[], asyncio.Protocol],
        metrics: Metrics,
        transparent: Callable[[], asyncio.Protocol] | None = None,
        authority: CertificateAuthority | None = None,
        access_log_class: type[AbstractAccessLogger] | None = None,
    ) -> None:
        """plain: the index face's handler factory (``AppRunner.server``); transparent: the
        transparent app's; authority: the CA (None with the face off); access_log_class: the
        access log of the requests refused on an intercepted connection."""
        self.config = config
        self.plain = plain
        self.metrics = metrics
        self.transparent = transparent
        self.authority = authority
        self.timeout = config.idle_timeout
        self.tokens = config.client_tokens()
        self.packages = config.package_hosts()
        self.warnings = _RateLimited()
        # A handler for intercepted connections that are not served (SNI mismatch).
        handler_args: dict[str, Any] = {"keepalive_timeout": config.idle_timeout}
        if access_log_class is not None:
            handler_args["access_log_class"] = access_log_class
        self.refusals = web.Server(_refuse_every_request, access_log=access_log, **handler_args)
        self.pending: set[_Connection] = set()  # CONNECTs being read or decided
        self.tunnels: set[_Tunnel] = set()

    def protocol(self) -> asyncio.Protocol:
        return _Connection(self)

    def counts(self) -> dict[str, int]:
        return {o: int(self.metrics.total(self.metrics.connects, outcome=o)) for o in OUTCOMES}

    async def close(self, timeout: float = 10.0) -> None:
        """Stop what is not aiohttp's to stop: CONNECTs being decided, tunnels, refusals."""
        for connection in list(self.pending):
            connection.abort()
        for tunnel in list(self.tunnels):
            tunnel.close()
        await self.refusals.shutdown(timeout)


async def _refuse_every_request(request: web.BaseRequest) -> web.StreamResponse:
    found = _INTERCEPTED.get(request.protocol)
    reason = found.refusal if found is not None and found.refusal else "refused"
    return web.Response(status=403, text=reason + "\n")


class _Connection(asyncio.Protocol):
    """One accepted connection until it is handed to a request handler or a tunnel."""

    def __init__(self, front: ConnectFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.state = "sniff"  # sniff, head, decide, handshake, done
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None
        self.started = 0.0
        # Data and EOF that arrive between the handshake and the hand-over.
        self.early = b""
        self.eof = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        self.timer = loop.call_later(self.front.timeout, self._timed_out)
        self.front.pending.add(self)

    def data_received(self, data: bytes) -> None:
        if self.state == "handshake":
            self.early += data
            return
        if self.state not in ("sniff", "head"):
            return
        self.buffer += data
        if self.state == "sniff":
            if len(self.buffer) < len(_CONNECT) and _CONNECT.startswith(self.buffer):
                return  # it may still be a CONNECT
            if not self.buffer.startswith(_CONNECT):
                self._hand_to_plain()
                return
            self.state = "head"
        end = _HEAD_END.search(self.buffer, 0, MAX_HEAD + 4)
        if end is None:
            if len(self.buffer) > MAX_HEAD:
                self._answer(431, "bad", f"a CONNECT head over {MAX_HEAD} bytes", "-")
            return
        self._stop_timer()
        assert self.transport is not None
        self.transport.pause_reading()
        self.state = "decide"
        head, rest = self.buffer[: end.start()], self.buffer[end.end() :]
        self.buffer = b""
        self.task = asyncio.ensure_future(self._decide_then_forget(head, rest))

    def eof_received(self) -> bool | None:
        if self.state == "handshake":
            self.eof = True
            return True
        return None  # closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if self.state == "decide" and self.task is not None:
            self.task.cancel()  # the client left before it had an answer
        if self.state != "handshake":
            self.front.pending.discard(self)
            self.state = "done"

    # -- the plain face

    def _hand_to_plain(self) -> None:
        self._done()
        self.front.pending.discard(self)
        handler = self.front.plain()
        assert self.transport is not None
        self.transport.set_protocol(handler)
        handler.connection_made(self.transport)
        data, self.buffer = self.buffer, b""
        handler.data_received(data)

    # -- deciding

    def _timed_out(self) -> None:
        self.timer = None
        if self.state in ("sniff", "head") and self.transport is not None:
            self.state = "done"
            self.transport.close()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _done(self) -> None:
        """Answered: nothing more to read here (a hand-over may follow)."""
        self.state = "done"
        self._stop_timer()

    def abort(self) -> None:
        self._done()
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    def _log(self, target: str, status: int, outcome: str) -> None:
        loop = asyncio.get_running_loop()
        fields = {
            "method": "CONNECT",
            "path": target,
            "status": status,
            "outcome": outcome,
            "bytes": 0,
            "ms": round((loop.time() - self.started) * 1000, 1),
        }
        access_log.info(
            "%(method)s %(path)s %(status)s %(outcome)s %(bytes)sB %(ms).1fms",
            fields,
            extra=fields,
        )

    def _count(self, outcome: str) -> None:
        self.front.metrics.connects.labels(outcome).inc()

    def _answer(
        self,
        status: int,
        outcome: str,
        reason: str,
        target: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """A refusal: status, the reason as a one-line body, and the connection closed."""
        self._done()
        self._count(outcome)
        self._log(target, status, outcome)
        body = (reason + "\n").encode()
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        assert self.transport is not None
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self.transport.close()

    async def _decide_then_forget(self, head: bytes, rest: bytes) -> None:
        try:
            await self._decide(head, rest)
        except Exception:
            log.exception("CONNECT failed")
            if self.transport is not None:
                self.transport.abort()
        finally:
            self.front.pending.discard(self)

    async def _decide(self, head: bytes, rest: bytes) -> None:
        front = self.front
        try:
            request = parse_head(head)
        except BadConnect as exc:
            self._answer(400, "bad", f"bad CONNECT: {exc}", "-")
            return
        target = request.target
        if front.transparent is None or front.authority is None:
            self._answer(
                405,
                "refused",
                "the transparent face is off (--no-transparent): this proxy answers no CONNECT",
                target,
                {"Allow": "GET, HEAD"},
            )
            return
        if front.tokens and not token_allowed(
            presented_token(request.proxy_authorization), front.tokens
        ):
            reason = (
                "proxy credentials required (Proxy-Authorization: the token as the password)"
                if request.proxy_authorization is None
                else "unknown proxy token"
            )
            self._answer(
                407, "unauthorized", reason, target, {"Proxy-Authenticate": PROXY_CHALLENGE}
            )
            return
        decision = decide(
            request.host, request.port, packages=front.packages, tunnels=front.config.tunnel
        )
        if decision.action == "refuse":
            self._answer(403, "refused", f"refused: {decision.reason}", target)
            return
        if decision.action == "tunnel":
            await self._tunnel(request, rest)
            return
        if rest:
            self._answer(400, "bad", "bytes were sent before the 200 of the CONNECT", target)
            return
        await self._intercept(request)

    # -- tunnel

    async def _tunnel(self, request: ConnectRequest, rest: bytes) -> None:
        loop = asyncio.get_running_loop()
        tunnel = _Tunnel(self.front)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: tunnel.upstream, request.host, request.port),
                self.front.timeout,
            )
        except asyncio.CancelledError:  # the client left, or the proxy stops
            tunnel.close()
            raise
        except asyncio.TimeoutError:
            self._answer(
                504, "tunnelled", f"{request.target} did not answer in time", request.target
            )
            return
        except OSError as exc:
            reason = f"cannot reach {request.target}: {exc.strerror or exc}"
            self._answer(502, "tunnelled", reason, request.target)
            return
        assert self.transport is not None
        if self.transport.is_closing():
            tunnel.close()
            return
        self._done()
        self._count("tunnelled")
        self._log(request.target, 200, "tunnelled")
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        tunnel.open(self.transport, rest)

    # -- intercept

    async def _intercept(self, request: ConnectRequest) -> None:
        front = self.front
        assert front.authority is not None and front.transparent is not None
        try:
            context = await front.authority.leaf_context_async(request.host)
        except CaError as exc:  # a host the CA may not vouch for (HostNotCovered)
            self._answer(403, "refused", f"refused: {exc}", request.target)
            return
        if context.sni_callback is not _record_sni:
            context.sni_callback = _record_sni
        self._count("intercepted")
        self._log(request.target, 200, "intercepted")
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.state = "handshake"
        try:
            tls = await start_server_tls(self.transport, self, context, front.timeout)
        except (OSError, EOFError, ssl.SSLError) as exc:
            self.state = "done"
            self._handshake_failed(request, exc)
            return
        self.state = "done"
        if tls is None or tls.is_closing():
            return
        sni = _SNI.pop(tls.get_extra_info("ssl_object"), None)
        refusal = None
        if sni is not None and not _same_host(sni, request.host):
            refusal = (
                f"refused: the TLS server name {sni[:100]!r} is not the CONNECT host {request.host}"
            )
            front.warnings.warning(
                "sni", "CONNECT %s: the client's TLS server name is %r", request.target, sni[:100]
            )
        handler = front.refusals() if refusal else front.transparent()
        _register(handler, tls, _Intercepted(request.host, request.port, refusal))
        tls.set_protocol(handler)
        handler.connection_made(tls)
        early, self.early = self.early, b""
        if early:
            handler.data_received(early)
        if self.eof:
            handler.eof_received()

    def _handshake_failed(self, request: ConnectRequest, exc: BaseException) -> None:
        warnings = self.front.warnings
        target = request.target
        if isinstance(exc, ssl.SSLError):
            reason = exc.reason or ""
            if reason.startswith(("TLSV1_ALERT", "SSLV3_ALERT")):
                warnings.warning(
                    "untrusted",
                    "CONNECT %s: the client refused the certificate (%s): does it trust "
                    "this proxy's CA (cacheproxy env --transparent)?",
                    target,
                    reason,
                )
            else:
                warnings.warning(
                    "garbage",
                    "CONNECT %s: no TLS handshake after the 200 (%s): closed",
                    target,
                    reason or "unreadable",
                )
        elif isinstance(exc, (ConnectionAbortedError, asyncio.TimeoutError, TimeoutError)):
            warnings.warning(
                "handshake-timeout",
                "CONNECT %s: the TLS handshake did not complete within %gs: closed",
                target,
                self.front.timeout,
            )
        else:
            log.debug("CONNECT %s: the client left during the TLS handshake: %s", target, exc)


# --- TLS ---------------------------------------------------------------------------------------


class _ServerTLS(sslproto.SSLProtocol):
    """asyncio's TLS protocol with a smaller receive buffer. asyncio gives every TLS
    connection a zero-filled (so resident) 256 KiB buffer to read the client's bytes into; a
    lock install opens one connection per file it fetches at once (uv: a few dozen), so eight
    such clients held about 80 MiB in these buffers alone. What arrives on an intercepted
    connection is requests, a few hundred bytes each; the responses never pass through it."""

    max_size = TLS_READ_BUFFER


async def start_server_tls(
    transport: asyncio.Transport,
    protocol: asyncio.Protocol,
    context: ssl.SSLContext,
    timeout: float,
) -> asyncio.Transport:
    """``loop.start_tls(transport, protocol, context, server_side=True)`` with _ServerTLS:
    the same steps, the protocol asyncio's own but for its buffer size."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    try:
        # (typeshed has the handshake timeout as an int; asyncio takes any number of seconds)
        tls = _ServerTLS(
            loop, protocol, context, waiter, server_side=True, call_connection_made=False,
            ssl_handshake_timeout=timeout,  # type: ignore[arg-type]
        )  # fmt: skip
    except TypeError:
        # asyncio's TLS protocol is not public API: where it takes other arguments, the public
        # start_tls does the same with asyncio's own buffer size.
        started = await loop.start_tls(
            transport, protocol, context, server_side=True, ssl_handshake_timeout=timeout
        )
        assert started is not None
        return cast(asyncio.Transport, started)
    # As start_tls: no data_received() before connection_made().
    transport.pause_reading()
    transport.set_protocol(tls)
    made = loop.call_soon(tls.connection_made, transport)
    resumed = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        made.cancel()
        resumed.cancel()
        raise
    app = tls._app_transport  # what start_tls returns; asyncio names it nowhere public
    app.set_write_buffer_limits(high=TLS_WRITE_BUFFER)
    return app


# --- tunnels ----------------------------------------------------------------------------------


class _End(asyncio.Protocol):
    """One side of a tunnel: what it reads is written to the other side."""

    def __init__(self, tunnel: _Tunnel) -> None:
        self.tunnel = tunnel
        self.transport: asyncio.Transport | None = None
        self.peer: _End | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=TUNNEL_BUFFER)
        if not self.tunnel.opened:
            transport.pause_reading()  # until the client has its 200

    def data_received(self, data: bytes) -> None:
        self.tunnel.active()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None or peer.eof:
            self.tunnel.close()
            return None
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
            return True  # the other way may still carry data
        self.tunnel.close()
        return None

    # This side's writes are backed up: stop reading the side that feeds them.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.close()


class _Tunnel:
    """Bytes both ways between a client and a --tunnel host; closed after idle_timeout
    without traffic either way."""

    def __init__(self, front: ConnectFront) -> None:
        self.front = front
        self.client = _End(self)
        self.upstream = _End(self)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self.opened = False
        self.closed = False
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def open(self, client: asyncio.Transport, rest: bytes) -> None:
        self.opened = True
        self.front.tunnels.add(self)
        client.set_protocol(self.client)
        self.client.connection_made(client)
        self.active()
        if rest:
            self.client.data_received(rest)
        for end in (self.client, self.upstream):
            if end.transport is not None and not end.transport.is_closing():
                end.transport.resume_reading()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.front.timeout, self._check_idle)

    def active(self) -> None:
        self.last = time.monotonic()

    def _check_idle(self) -> None:
        idle = time.monotonic() - self.last
        if idle >= self.front.timeout:
            self.close()
            return
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.front.timeout - idle, self._check_idle)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.front.tunnels.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        for end in (self.client, self.upstream):
            if end.transport is not None:
                with contextlib.suppress(RuntimeError):
                    end.transport.close()

    def buffered(self) -> int:
        """Bytes waiting to be written to either side (bounded by backpressure)."""
        return sum(
            end.transport.get_write_buffer_size()
            for end in (self.client, self.upstream)
            if end.transport is not None
        )

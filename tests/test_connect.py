"""The front door of the listener: plain requests to the index face, CONNECT to the
transparent face (intercepted), a --tunnel host (piped) or a refusal. Real sockets, real TLS
with the CA the proxy opens on a temporary cache."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import socket
import ssl
import time
import types
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from cryptography import x509

from cacheproxy.config import Config, HostPort
from cacheproxy.http.ca import fingerprint
from cacheproxy.http.connect import MAX_HEAD, TUNNEL_BUFFER, decide, parse_head, parse_target
from cacheproxy.http.server import Running, running
from tests.fakes.clients import clean_env
from tests.fakes.https_upstream import https_upstream
from tests.fakes.process import ProxyProcess
from tests.fakes.upstream import UpstreamIndex

HOST = "pkgs.test"  # a package host by --intercept-host; no one resolves it
NOWHERE = "http://127.0.0.2:9/simple/"  # the upstream: never asked by these tests


def settings(tmp_path: Path, **overrides) -> Config:
    values = {
        "cache_dir": tmp_path / "cache",
        "upstream": NOWHERE,
        "port": 0,
        "intercept_host": (HostPort(HOST),),
        "idle_timeout": 5.0,
    }
    values.update(overrides)
    return Config(**values)


@contextlib.asynccontextmanager
async def proxy_at(tmp_path: Path, **overrides):
    async with running(settings(tmp_path, **overrides)) as proxy:
        yield proxy


def port_of(proxy: Running) -> int:
    assert proxy.root.port is not None
    return proxy.root.port


def trusting(proxy: Running) -> ssl.SSLContext:
    assert proxy.bundle is not None
    return ssl.create_default_context(cafile=str(proxy.bundle))


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status, headers = await read_head(reader)
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    else:
        body = await asyncio.wait_for(reader.read(), 10)
    return status, headers, body


async def send_connect(
    proxy: Running, target: str, *headers: str
) -> tuple[int, dict[str, str], asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy))
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", *headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    status, got = await read_head(reader)
    return status, got, reader, writer


async def refusal(proxy: Running, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes as the start of a connection; the answer, read to the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy))
    writer.write(raw)
    try:
        status, headers = await read_head(reader)
        body = await asyncio.wait_for(reader.read(), 10)  # the connection closes after it
        return status, headers, body
    finally:
        writer.close()


async def intercepted_get(
    proxy: Running, paths: list[str], *, target: str = f"{HOST}:443", sni: str = HOST, **kw
) -> list[tuple[int, bytes]]:
    """CONNECT, TLS trusting the proxy's bundle, then GET each path on that one connection."""
    status, _, reader, writer = await send_connect(proxy, target, *kw.get("headers", ()))
    assert status == 200
    context = kw.get("context") or trusting(proxy)
    await writer.start_tls(context, server_hostname=sni)
    answers = []
    for path in paths:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {sni}\r\n\r\n".encode())
        status, _, body = await read_response(reader)
        answers.append((status, body))
    writer.close()
    return answers


def count(proxy: Running, outcome: str) -> int:
    return proxy.front.counts()[outcome]


# --- intercept --------------------------------------------------------------------------------


async def test_a_package_host_is_intercepted_with_keep_alive(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cacheproxy.http.access")
    async with proxy_at(tmp_path) as proxy:
        answers = await intercepted_get(proxy, ["/simple/attrs/", "/files/a.whl?x=1"])
        # pkgs.test is a file host here: both reach the face's file route, which names why.
        assert [status for status, _ in answers] == [404, 404]
        assert all(b"not a distribution file name" in body for _, body in answers)
        assert count(proxy, "intercepted") == 1  # one CONNECT, two requests
    logged = [r.getMessage() for r in caplog.records if r.name == "cacheproxy.http.access"]
    assert any(line.startswith("CONNECT pkgs.test:443 200 intercepted") for line in logged)
    assert any(line.startswith("GET https://pkgs.test/files/a.whl?x=1 404") for line in logged)


async def test_the_certificate_names_the_host_and_chains_to_the_bundle(tmp_path):
    async with proxy_at(tmp_path) as proxy:
        _, _, reader, writer = await send_connect(proxy, f"{HOST}:443")
        await writer.start_tls(trusting(proxy), server_hostname=HOST)
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() in (None, "http/1.1")
        assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
        names = [v for k, v in ssl_object.getpeercert()["subjectAltName"]]
        assert names == [HOST]
        writer.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_through_the_proxy_reaches_the_transparent_app(tmp_path):
    async with proxy_at(tmp_path) as proxy:
        env = {k: v for k, v in clean_env().items() if "proxy" not in k.lower()}
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--proxy",
            f"http://127.0.0.1:{port_of(proxy)}",
            "--cacert",
            str(proxy.bundle),
            f"https://{HOST}/simple/attrs/",
            f"https://{HOST}/simple/idna/",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        assert out.count(b"not a distribution file name") == 2  # both answered by the face
        assert count(proxy, "intercepted") == 1  # curl kept the tunnel for both


async def test_aiohttp_client_through_the_proxy(tmp_path):
    async with proxy_at(tmp_path) as proxy:
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"https://{HOST}/simple/attrs/",
                proxy=f"http://127.0.0.1:{port_of(proxy)}",
                ssl=trusting(proxy),
            ) as resp:
                assert resp.status == 404
                assert "not a distribution file name" in await resp.text()


async def test_the_upstreams_host_on_its_own_port_is_intercepted(tmp_path):
    async with proxy_at(tmp_path) as proxy:
        answers = await intercepted_get(proxy, ["/simple/"], target="127.0.0.2:9", sni="127.0.0.2")
        # The upstream's own index root, answered from the cache (it holds no project yet).
        assert answers[0][0] == 200


async def test_a_file_goes_out_over_tls_read_from_the_page_cache_in_small_writes(
    tmp_path, wheelhouse, wheel_bytes, monkeypatch
):
    """No sendfile through TLS: asyncio's own fallback would read 16 KiB at a time, each read a
    round trip to a thread (an 8 MiB wheel: 512 of them). A stored file the page cache holds
    is read at once instead, 64 KiB at a time (a thread only for what is not cached), and
    written 16 KiB at a time."""
    import aiohttp.connector

    from cacheproxy.http import file_responses

    threaded: list[int] = []  # reads that waited in a thread
    cached: list[int] = []  # reads of the page cache that would not wait for the disk
    fake_os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os)})
    fake_os.pread = lambda fd, size, offset: threaded.append(size) or os.pread(fd, size, offset)

    def preadv(fd, buffers, offset, flags):
        got = os.preadv(fd, buffers, offset, flags)
        cached.append(got)
        return got

    fake_os.preadv = preadv
    monkeypatch.setattr(file_responses, "os", fake_os)
    writes: list[int] = []
    real_write = web.StreamResponse.write

    async def write(self, data):
        if isinstance(self, file_responses._AnswerResponse):  # the proxy's, not the upstream's
            writes.append(len(data))
        return await real_write(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", write)
    big = "bigpkg-1.0-py3-none-any.whl"
    index = UpstreamIndex()
    index.add_wheel(wheelhouse[big])
    async with https_upstream(index, tmp_path / "upstream") as upstream:
        # The proxy's upstream client trusts the upstream's CA (made when aiohttp is imported).
        trusting_upstream = ssl.create_default_context(cafile=str(upstream.ca_file))
        monkeypatch.setattr(aiohttp.connector, "_SSL_CONTEXT_VERIFIED", trusting_upstream)
        path = index.files[big].url_path
        target = f"{upstream.host}:{upstream.port}"
        async with proxy_at(tmp_path, upstream=upstream.simple_url) as proxy:
            for outcome in ("miss", "stored"):
                threaded.clear()
                cached.clear()
                writes.clear()
                [(status, body)] = await intercepted_get(
                    proxy, [path], target=target, sni=upstream.host
                )
                assert status == 200 and body == wheel_bytes(big), (outcome, body[:200])
                # Written in small pieces, as it arrived or as it was read: OpenSSL's buffer
                # for the connection grows to the largest write and stays that size.
                assert max(writes) <= file_responses.TLS_PIECE_BYTES, outcome
                assert sum(writes) == len(body), outcome
        assert index.file_hits(big) == 1
    # Just stored, so in the page cache: no read waited in a thread.
    chunk = 64 * 1024
    assert threaded == []
    assert cached == [chunk] * (len(body) // chunk) + [len(body) % chunk]


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("elsewhere.test:443", "elsewhere.test is not a package host"),
        ("pkgs.test:8443", "port 8443 is not allowed for package host pkgs.test (only 443)"),
        ("127.0.0.2:443", "port 443 is not allowed for package host 127.0.0.2 (only 9)"),
        ("sub.pkgs.test:443", "sub.pkgs.test is not a package host"),
        ("127.1:9", "127.1 is not a package host"),  # another spelling is another host
        ("[::1]:443", "[::1] is not a package host"),
        ("localhost:3145", "localhost is not a package host"),
    ],
)
async def test_not_an_open_proxy(tmp_path, target, reason):
    async with proxy_at(tmp_path) as proxy:
        status, headers, body = await refusal(proxy, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
        assert status == 403, body
        assert reason in body.decode() and body.count(b"\n") == 1
        assert headers["connection"] == "close"
        assert proxy.front.counts() == {
            "intercepted": 0,
            "tunnelled": 0,
            "refused": 1,
            "bad": 0,
            "unauthorized": 0,
        }


async def test_a_request_for_another_site_is_not_forwarded(tmp_path, aiohttp_server):
    """Absolute-form requests (a plain HTTP proxy's) go to the index face, never upstream."""
    asked = []

    async def record(request):
        asked.append(request.path)
        return web.Response(text="reached")

    target = await aiohttp_server(_app_with(record))
    async with proxy_at(tmp_path) as proxy:
        host = f"127.0.0.1:{target.port}"
        status, _, body = await refusal(
            proxy,
            f"GET http://{host}/secret HTTP/1.1\r\nHost: {host}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert status == 404 and b"reached" not in body
    assert asked == []


def _app_with(handler) -> web.Application:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (b"CONNECT pkgs.test HTTP/1.1\r\n\r\n", 400, "no port"),
        (b"CONNECT pkgs.test: HTTP/1.1\r\n\r\n", 400, "not a port"),
        (b"CONNECT pkgs.test:0 HTTP/1.1\r\n\r\n", 400, "out of range"),
        (b"CONNECT pkgs.test:70000 HTTP/1.1\r\n\r\n", 400, "out of range"),
        (b"CONNECT pkgs.test:+443 HTTP/1.1\r\n\r\n", 400, "not a port"),
        (b"CONNECT user@pkgs.test:443 HTTP/1.1\r\n\r\n", 400, "not a host name"),
        (b"CONNECT https://pkgs.test:443/ HTTP/1.1\r\n\r\n", 400, "not a host name"),
        (b"CONNECT *.test:443 HTTP/1.1\r\n\r\n", 400, "not a host name"),
        (b"CONNECT [pkgs.test]:443 HTTP/1.1\r\n\r\n", 400, "not an IPv6 address"),
        (b"CONNECT [::1] HTTP/1.1\r\n\r\n", 400, "no port"),
        (b"CONNECT pkgs.test:443 HTTP/2.0\r\n\r\n", 400, "not a request line"),
        (b"CONNECT  pkgs.test:443 HTTP/1.1\r\n\r\n", 400, "not a request line"),
        (b"CONNECT pkgs.test:443\r\n\r\n", 400, "not a request line"),
        (b"CONNECT pkgs.test:443 HTTP/1.1\r\nno colon here\r\n\r\n", 400, "header line"),
        (b"CONNECT \x00\xff:443 HTTP/1.1\r\n\r\n", 400, "not a host name"),
        (
            b"CONNECT pkgs.test:443 HTTP/1.1\r\n" + b"X: " + b"a" * MAX_HEAD + b"\r\n\r\n",
            431,
            "8192",
        ),
    ],
)
async def test_a_malformed_connect_is_400_with_a_reason(tmp_path, raw, status, reason):
    async with proxy_at(tmp_path) as proxy:
        got, _, body = await refusal(proxy, raw)
        assert got == status and reason in body.decode(), body
        assert count(proxy, "bad") == 1


async def test_bytes_before_the_200_are_refused(tmp_path):
    async with proxy_at(tmp_path) as proxy:
        status, _, body = await refusal(
            proxy, b"CONNECT pkgs.test:443 HTTP/1.1\r\n\r\n\x16\x03\x01"
        )
        assert status == 400 and b"before the 200" in body


async def test_a_connect_head_that_never_ends_is_closed_at_the_idle_timeout(tmp_path):
    async with proxy_at(tmp_path, idle_timeout=0.5) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy))
        writer.write(b"CONNECT pkgs.test:443 HTTP/1.1\r\nX-Slow: ")
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.3 < time.monotonic() - started < 3
        assert not proxy.front.pending
        writer.close()


# --- authentication ---------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Proxy-Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ((), "proxy credentials required"),
        ((basic("me", "wrong"),), "unknown proxy token"),
        (("Proxy-Authorization: Bearer wrong",), "unknown proxy token"),
        (("Proxy-Authorization: Basic !!!",), "unknown proxy token"),
        (("Authorization: Bearer s3cret",), "proxy credentials required"),  # not the proxy's
    ],
)
async def test_without_the_token_connect_is_407(tmp_path, headers, reason):
    async with proxy_at(tmp_path, auth_tokens=("s3cret",)) as proxy:
        raw = "\r\n".join(["CONNECT elsewhere.test:443 HTTP/1.1", *headers]) + "\r\n\r\n"
        status, got, body = await refusal(proxy, raw.encode())
        assert status == 407 and reason in body.decode()
        assert got["proxy-authenticate"] == 'Basic realm="cacheproxy"'
        assert count(proxy, "unauthorized") == 1 and count(proxy, "refused") == 0


@pytest.mark.parametrize(
    "header", [basic("anyone", "s3cret"), "Proxy-Authorization: Bearer s3cret"]
)
async def test_the_token_lets_connect_through(tmp_path, header):
    async with proxy_at(tmp_path, auth_tokens=("s3cret",)) as proxy:
        answers = await intercepted_get(proxy, ["/simple/x/"], headers=[header])
        assert answers[0][0] == 404
        # The token opens the face, not the policy: other hosts are still refused.
        status, _, _ = await refusal(
            proxy, f"CONNECT elsewhere.test:443 HTTP/1.1\r\n{header}\r\n\r\n".encode()
        )
        assert status == 403


async def test_the_token_is_never_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with proxy_at(tmp_path, auth_tokens=("s3cret",)) as proxy:
        await refusal(proxy, f"CONNECT a b c\r\n{basic('u', 's3cret')}\r\n\r\n".encode())
        await refusal(proxy, f"CONNECT x:1 HTTP/1.1\r\n{basic('u', 'nope')}\r\n\r\n".encode())
    assert "s3cret" not in caplog.text and "nope" not in caplog.text
    assert base64.b64encode(b"u:s3cret").decode() not in caplog.text


# --- TLS: SNI, garbage, timeouts --------------------------------------------------------------


async def test_an_sni_other_than_the_connect_host_is_refused_on_every_request(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="cacheproxy")
    async with proxy_at(tmp_path) as proxy:
        context = trusting(proxy)
        context.check_hostname = False  # this client would refuse the certificate otherwise
        for _ in range(3):
            answers = await intercepted_get(
                proxy, ["/simple/a/", "/simple/b/"], sni="elsewhere.test", context=context
            )
            assert [status for status, _ in answers] == [403, 403]
            assert b"'elsewhere.test' is not the CONNECT host pkgs.test" in answers[0][1]
    sni_lines = [r for r in caplog.records if "TLS server name" in r.getMessage()]
    assert len(sni_lines) == 1


async def test_an_sni_differing_only_in_case_is_the_same_host(tmp_path):
    async with proxy_at(tmp_path) as proxy:
        context = trusting(proxy)
        answers = await intercepted_get(
            proxy, ["/x"], target="PKGS.test:443", sni="pkgs.TEST", context=context
        )
        assert answers[0][0] == 404


async def test_garbage_instead_of_a_client_hello_is_closed_and_logged_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="cacheproxy")
    async with proxy_at(tmp_path) as proxy:
        for _ in range(5):
            status, _, reader, writer = await send_connect(proxy, f"{HOST}:443")
            assert status == 200
            writer.write(b"GET / HTTP/1.1\r\nHost: pkgs.test\r\n\r\n")
            rest = await asyncio.wait_for(reader.read(), 5)
            assert b"HTTP/" not in rest  # closed (at most a TLS alert), nothing served
            writer.close()
        # The proxy still serves.
        assert (await intercepted_get(proxy, ["/ok"]))[0][0] == 404
    garbage = [r for r in caplog.records if "no TLS handshake" in r.getMessage()]
    assert len(garbage) == 1, [r.getMessage() for r in caplog.records]


def untrusting_handshake(port: int) -> None:
    """A blocking client (it sends its alert, as curl and uv do) that trusts the system's
    CAs only: it must refuse the proxy's certificate."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"CONNECT {HOST}:443 HTTP/1.1\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1024)
        assert head.startswith(b"HTTP/1.1 200")
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(sock, server_hostname=HOST)


async def test_a_client_that_does_not_trust_the_ca_is_logged_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="cacheproxy")
    async with proxy_at(tmp_path) as proxy:
        for _ in range(3):
            await asyncio.to_thread(untrusting_handshake, port_of(proxy))
        await asyncio.sleep(0.2)
    lines = [r for r in caplog.records if "refused the certificate" in r.getMessage()]
    assert len(lines) == 1 and "cacheproxy env --transparent" in lines[0].getMessage()


async def test_a_handshake_that_never_completes_is_closed_at_the_idle_timeout(tmp_path):
    async with proxy_at(tmp_path, idle_timeout=0.5) as proxy:
        status, _, reader, writer = await send_connect(proxy, f"{HOST}:443")
        assert status == 200
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.3 < time.monotonic() - started < 3
        writer.close()


async def test_a_half_sent_client_hello_is_closed_at_the_idle_timeout(tmp_path):
    async with proxy_at(tmp_path, idle_timeout=0.5) as proxy:
        status, _, reader, writer = await send_connect(proxy, f"{HOST}:443")
        writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


# --- tunnels ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def echo_server():
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write(b"<eof>")
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_a_tunnel_host_is_piped_both_ways_and_counted(tmp_path):
    async with echo_server() as port:
        async with proxy_at(tmp_path, tunnel=(HostPort("127.0.0.1", port),)) as proxy:
            status, _, reader, writer = await send_connect(proxy, f"127.0.0.1:{port}")
            assert status == 200
            payload = os.urandom(3 * 1024 * 1024)
            writer.write(payload)
            writer.write_eof()  # half-closed: the answer still comes back
            echoed = await asyncio.wait_for(reader.read(), 10)
            assert echoed == payload + b"<eof>"
            writer.close()
            assert count(proxy, "tunnelled") == 1 and count(proxy, "intercepted") == 0
            # Another port of the same host is not passed through.
            got, _, body = await refusal(
                proxy, f"CONNECT 127.0.0.1:{port + 1} HTTP/1.1\r\n\r\n".encode()
            )
            assert got == 403 and b"not allowed for --tunnel host 127.0.0.1" in body


async def test_http_through_a_tunnel(tmp_path, aiohttp_server):
    async def hello(request):
        return web.Response(text=f"hello {request.path}")

    server = await aiohttp_server(_app_with(hello))
    async with proxy_at(tmp_path, tunnel=(HostPort("127.0.0.1", server.port),)) as proxy:
        status, _, reader, writer = await send_connect(proxy, f"127.0.0.1:{server.port}")
        assert status == 200
        for path in ("/a", "/b"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            got, _, body = await read_response(reader)
            assert (got, body) == (200, f"hello {path}".encode())
        writer.close()


async def test_a_tunnel_to_a_port_nothing_listens_on_is_502(tmp_path):
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        async with proxy_at(tmp_path, tunnel=(HostPort("127.0.0.1", port),)) as proxy:
            status, _, body = await refusal(
                proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode()
            )
            assert status == 502 and b"cannot reach 127.0.0.1" in body


async def test_an_idle_tunnel_is_closed(tmp_path):
    async with echo_server() as port:
        async with proxy_at(
            tmp_path, idle_timeout=0.5, tunnel=(HostPort("127.0.0.1", port),)
        ) as proxy:
            _, _, reader, writer = await send_connect(proxy, f"127.0.0.1:{port}")
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            started = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert 0.3 < time.monotonic() - started < 3
            assert not proxy.front.tunnels
            writer.close()


async def test_a_client_that_does_not_read_holds_back_the_tunnel(tmp_path):
    """Backpressure: the proxy buffers a bounded amount for a slow reader, then stops reading
    the sender; nothing is lost."""
    size = 32 * 1024 * 1024

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunk = b"x" * 65536
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(flood, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with proxy_at(tmp_path, tunnel=(HostPort("127.0.0.1", port),)) as proxy:
            _, _, reader, writer = await send_connect(proxy, f"127.0.0.1:{port}")
            await asyncio.sleep(1.0)  # not reading
            (tunnel,) = proxy.front.tunnels
            # Its write buffer, plus at most one read the proxy had in hand.
            assert tunnel.buffered() <= TUNNEL_BUFFER + 256 * 1024
            got = 0
            while data := await asyncio.wait_for(reader.read(1 << 20), 10):
                got += len(data)
            assert got == size
            writer.close()
    finally:
        server.close()


# --- the index face, the face switched off ----------------------------------------------------


async def test_the_index_face_still_answers_on_the_same_port(tmp_path, upstream):
    async with proxy_at(tmp_path, upstream=upstream.simple_url) as proxy:
        root = f"http://127.0.0.1:{port_of(proxy)}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{root}/simple/tinyalpha/") as resp:
                assert resp.status == 200 and "tinyalpha" in await resp.text()
            # pipenv's mirror URL with a trailing slash: /simple//tinyalpha/
            async with session.get(f"{root}/simple//tinyalpha/") as resp:
                assert resp.status == 200 and "tinyalpha" in await resp.text()
                assert [r.status for r in resp.history] == [308]
                assert resp.url.path == "/simple/tinyalpha/"
            async with session.get(f"{root}/metrics") as resp:
                text = await resp.text()
                assert 'cacheproxy_connects_total{outcome="intercepted"} 0.0' in text
            # A CONNECT on the same port, then the status page counts it.
            await intercepted_get(proxy, ["/x"])
            await refusal(proxy, b"CONNECT elsewhere.test:443 HTTP/1.1\r\n\r\n")
            async with session.get(f"{root}/metrics") as resp:
                text = await resp.text()
                assert 'cacheproxy_connects_total{outcome="intercepted"} 1.0' in text
                assert 'cacheproxy_connects_total{outcome="refused"} 1.0' in text
            async with session.get(f"{root}/") as resp:
                page = await resp.text()
                assert '<span id="connects-intercepted">1</span>' in page
                assert '<span id="connects-refused">1</span>' in page


async def test_a_keep_alive_plain_connection_after_a_partial_first_read(tmp_path):
    """A plain request whose first bytes could have been a CONNECT ("C", "CO"...)."""
    async with proxy_at(tmp_path) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy))
        writer.write(b"G")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"ET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await read_response(reader)
        assert status == 200 and b"ok" in body
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_with_the_face_off_connect_is_refused_and_no_ca_is_made(tmp_path):
    async with proxy_at(tmp_path, transparent=False, tunnel=(HostPort("127.0.0.1", 9),)) as proxy:
        assert proxy.authority is None
        for target in (f"{HOST}:443", "127.0.0.1:9"):
            status, headers, body = await refusal(
                proxy, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode()
            )
            assert status == 405 and b"transparent face is off" in body
            assert headers["allow"] == "GET, HEAD"
        assert count(proxy, "refused") == 2
    assert not (tmp_path / "cache" / "ca").exists()


# --- CONNECT over an HTTPS listener -----------------------------------------------------------


async def test_connect_over_an_https_listener(tmp_path):
    listener_ca = trustme.CA()
    leaf = listener_ca.issue_cert("127.0.0.1")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(tls)
    async with running(settings(tmp_path), tls=tls) as proxy:
        assert proxy.root.scheme == "https"
        to_proxy = ssl.create_default_context()
        listener_ca.configure_trust(to_proxy)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port_of(proxy), ssl=to_proxy, server_hostname="127.0.0.1"
        )
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.close()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port_of(proxy), ssl=to_proxy, server_hostname="127.0.0.1"
        )
        writer.write(f"CONNECT {HOST}:443 HTTP/1.1\r\n\r\n".encode())
        assert (await read_head(reader))[0] == 200
        await writer.start_tls(trusting(proxy), server_hostname=HOST)  # TLS inside TLS
        writer.write(b"GET /simple/x/ HTTP/1.1\r\nHost: pkgs.test\r\n\r\n")
        status, _, body = await read_response(reader)
        assert status == 404 and b"not a distribution file name" in body
        writer.close()


# --- the process: start-up lines, shutdown ----------------------------------------------------


def test_the_start_up_line_names_the_hosts_and_the_ca(tmp_path):
    proxy = ProxyProcess(
        tmp_path / "cache", NOWHERE, "--intercept-host", HOST, "--tunnel", "git.test"
    )
    try:
        face = next(line for line in proxy.log if "transparent HTTPS face on" in line)
        assert "127.0.0.2:9" in face and HOST in face
        assert str(tmp_path / "cache" / "ca" / "bundle.pem") in face
        cert = x509.load_pem_x509_certificate((tmp_path / "cache" / "ca" / "ca.pem").read_bytes())
        assert fingerprint(cert) in face
        assert any("tunnelled untouched: git.test" in line for line in proxy.log)
    finally:
        assert proxy.stop() == 0


def test_the_start_up_line_says_when_the_face_is_off(tmp_path):
    proxy = ProxyProcess(tmp_path / "cache", NOWHERE, "--no-transparent")
    try:
        assert any("transparent HTTPS face off" in line for line in proxy.log)
    finally:
        assert proxy.stop() == 0
    assert not (tmp_path / "cache" / "ca").exists()


async def test_the_process_stops_promptly_with_connections_open(tmp_path):
    proxy = ProxyProcess(tmp_path / "cache", NOWHERE, "--intercept-host", HOST)
    try:
        port = int(proxy.url.split(":")[2].split("/")[0])
        bundle = tmp_path / "cache" / "ca" / "bundle.pem"
        # An intercepted connection, a CONNECT half sent, a plain keep-alive connection.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CONNECT {HOST}:443 HTTP/1.1\r\n\r\n".encode())
        assert (await read_head(reader))[0] == 200
        await writer.start_tls(ssl.create_default_context(cafile=str(bundle)), server_hostname=HOST)
        writer.write(b"GET /x HTTP/1.1\r\nHost: pkgs.test\r\n\r\n")
        assert (await read_response(reader))[0] == 404
        _, half = await asyncio.open_connection("127.0.0.1", port)
        half.write(b"CONNECT pkgs")
        _, plain = await asyncio.open_connection("127.0.0.1", port)
        plain.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.2)
        started = time.monotonic()
        assert await asyncio.to_thread(proxy.stop) == 0
        assert time.monotonic() - started < 5
        for w in (writer, half, plain):
            w.close()
    finally:
        proxy.stop()


def resident_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


async def test_many_open_intercepted_connections_cost_little_memory(tmp_path):
    """A lock install opens one connection per file it fetches at once (uv: dozens, and eight
    clients at once are hundreds). Each TLS connection's read buffer was asyncio's 256 KiB,
    zero-filled: 200 of them held about 55 MiB of the proxy's memory."""
    proxy = ProxyProcess(tmp_path / "cache", NOWHERE, "--intercept-host", HOST)
    writers = []
    try:
        port = int(proxy.url.split(":")[2].split("/")[0])
        context = ssl.create_default_context(cafile=str(tmp_path / "cache" / "ca" / "bundle.pem"))

        async def intercepted() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            writer.write(f"CONNECT {HOST}:443 HTTP/1.1\r\n\r\n".encode())
            assert (await read_head(reader))[0] == 200
            await writer.start_tls(context, server_hostname=HOST)
            writer.write(b"GET /x HTTP/1.1\r\nHost: pkgs.test\r\n\r\n")
            assert (await read_response(reader))[0] == 404

        await intercepted()  # the leaf certificate, the first handshake's imports
        before = resident_mib(proxy.proc.pid)
        for _ in range(200):
            await intercepted()
        grown = resident_mib(proxy.proc.pid) - before
        assert grown < 25, f"200 open intercepted connections: {grown:.1f} MiB more"
    finally:
        for writer in writers:
            writer.close()
        proxy.stop()


async def test_clients_that_stop_reading_hold_little_of_the_proxys_memory(tmp_path, wheelhouse):
    """Each intercepted connection whose client stops reading a large file holds one read of
    it (64 KiB) and at most 64 KiB of encrypted bytes waiting (asyncio's own bound is 512 KiB,
    and OpenSSL's buffer kept the size of the largest write): about 0.3 MiB each, where it
    was 1 MiB."""
    big = "bigpkg-1.0-py3-none-any.whl"
    index = UpstreamIndex()
    index.add_wheel(wheelhouse[big])
    async with https_upstream(index, tmp_path / "upstream") as upstream:
        proxy = await asyncio.to_thread(
            ProxyProcess, tmp_path / "cache", upstream.simple_url,
            env={"SSL_CERT_FILE": str(upstream.ca_file)},
        )  # fmt: skip
        writers = []
        try:
            port = int(proxy.url.split(":")[2].split("/")[0])
            context = ssl.create_default_context(
                cafile=str(tmp_path / "cache" / "ca" / "bundle.pem")
            )
            path = index.files[big].url_path

            async def stalled(read_all: bool = False) -> None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writers.append(writer)
                writer.write(f"CONNECT {upstream.host}:{upstream.port} HTTP/1.1\r\n\r\n".encode())
                assert (await read_head(reader))[0] == 200
                await writer.start_tls(context, server_hostname=upstream.host)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {upstream.host}\r\n\r\n".encode())
                if read_all:
                    assert (await read_response(reader))[0] == 200
                else:  # a few bytes, then nothing more: the socket's buffers fill up
                    assert (await read_head(reader))[0] == 200

            await stalled(read_all=True)  # now stored, and the first handshake's imports made
            before = resident_mib(proxy.proc.pid)
            await asyncio.gather(*(stalled() for _ in range(30)))
            await asyncio.sleep(1)  # until every connection's buffers are full
            grown = resident_mib(proxy.proc.pid) - before
            assert grown < 18, f"30 clients that stopped reading: {grown:.1f} MiB more"
        finally:
            for writer in writers:
                writer.close()
            proxy.stop()


# --- the pieces -------------------------------------------------------------------------------


def test_parse_target():
    assert parse_target("Pkgs.Test.:443") == ("pkgs.test", 443)
    assert parse_target("[::1]:8443") == ("::1", 8443)
    assert parse_target("127.0.0.1:1") == ("127.0.0.1", 1)


def test_parse_head_takes_the_first_proxy_authorization():
    head = (
        b"CONNECT a.test:443 HTTP/1.1\r\n"
        b"Proxy-Authorization: Bearer one\r\nproxy-authorization: Bearer two"
    )
    assert parse_head(head).proxy_authorization == "Bearer one"


def test_decide():
    packages = (HostPort("*.pkgs.test"), HostPort("mirror.test", 8443))
    tunnels = (HostPort("git.test"),)

    def action(host: str, port: int) -> tuple[str, str]:
        decision = decide(host, port, packages=packages, tunnels=tunnels)
        return decision.action, decision.reason

    assert action("files.pkgs.test", 443)[0] == "intercept"
    assert action("pkgs.test", 443)[0] == "refuse"  # *.x is not x itself
    assert action("mirror.test", 8443)[0] == "intercept"
    assert "only 8443" in action("mirror.test", 443)[1]
    assert action("git.test", 443)[0] == "tunnel"
    assert "--tunnel host git.test" in action("git.test", 22)[1]
    assert action("files.pkgs.test.evil.test", 443)[0] == "refuse"

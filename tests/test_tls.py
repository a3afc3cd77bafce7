"""HTTPS serving: real pip and uv trusting a test CA, stored files over TLS, a certificate
renewed on SIGHUP without a restart, and unusable certificate files refused at start."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import trustme
from yarl import URL

from tests.fakes.clients import clean_env, pip_install, uv_pip_install
from tests.fakes.process import ProxyProcess
from tests.test_socket_activation import as_fd_3, listening_socket

ALPHA = "tinyalpha-2.0-py3-none-any.whl"


class Certificates:
    """A test CA and server certificates for 127.0.0.1 and localhost, written as PEM files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = trustme.CA()
        self.ca_file = root / "ca.pem"
        self.ca.cert_pem.write_to_path(self.ca_file)

    def issue(self, name: str) -> tuple[Path, Path]:
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert_file, key_file = self.root / f"{name}.pem", self.root / f"{name}.key"
        cert_file.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(key_file)
        return cert_file, key_file


@pytest.fixture
def certs(tmp_path) -> Certificates:
    return Certificates(tmp_path)


@pytest.fixture
def https_proxy(certs, upstream, tmp_path):
    cert, key = certs.issue("server")
    proxy = ProxyProcess(
        tmp_path / "cache", upstream.simple_url, "--tls-cert", str(cert), "--tls-key", str(key)
    )
    yield proxy
    proxy.stop()


def peer_serial(url: str, ca_file: Path) -> int:
    """The serial number of the certificate a new TLS connection to the proxy is given."""
    context = ssl.create_default_context(cafile=str(ca_file))
    target = URL(url)
    with socket.create_connection((target.host, target.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=target.host) as tls:
            return int(tls.getpeercert()["serialNumber"], 16)


async def fetch(url: str, ca_file: Path, headers: dict[str, str] | None = None) -> tuple:
    context = ssl.create_default_context(cafile=str(ca_file))
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=context, headers=headers or {}) as resp:
            return resp.status, await resp.read()


async def test_pip_installs_over_https_trusting_the_ca(https_proxy, certs, tmp_path):
    assert https_proxy.url.startswith("https://127.0.0.1:")
    by_flag = await pip_install(
        https_proxy.url,
        tmp_path / "flag",
        "tinyalpha==2.0",
        extra_args=("--cert", str(certs.ca_file)),
    )
    by_flag.assert_ok()
    by_env = await pip_install(
        https_proxy.url, tmp_path / "env", "tinyalpha==2.0", env={"PIP_CERT": str(certs.ca_file)}
    )
    by_env.assert_ok()  # the second install is served from the store: sendfile falls back on TLS
    assert (tmp_path / "env" / "tinyalpha" / "__init__.py").is_file()


async def test_pip_refuses_a_proxy_it_does_not_trust(https_proxy, tmp_path):
    result = await pip_install(https_proxy.url, tmp_path / "t", "tinyalpha==2.0")
    assert result.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in result.stdout + result.stderr


async def test_uv_installs_over_https_with_ssl_cert_file(https_proxy, certs, tmp_path):
    result = await uv_pip_install(
        https_proxy.url, tmp_path / "t", "tinyalpha==2.0", env={"SSL_CERT_FILE": str(certs.ca_file)}
    )
    result.assert_ok()
    assert (tmp_path / "t" / "beta_helper" / "__init__.py").is_file()


async def test_stored_files_and_ranges_are_sent_whole_over_tls(https_proxy, certs, wheel_bytes):
    url = https_proxy.url + f"tinyalpha/{ALPHA}"
    cold = await fetch(url, certs.ca_file)
    stored = await fetch(url, certs.ca_file)
    tail = await fetch(url, certs.ca_file, {"Range": "bytes=-100"})
    assert cold == stored == (200, wheel_bytes(ALPHA))
    assert tail == (206, wheel_bytes(ALPHA)[-100:])


async def wait_for_log(proxy: ProxyProcess, needle: str) -> str:
    for _ in range(200):
        found = [line for line in proxy.log if needle in line]
        if found:
            return found[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {needle!r} in the log:\n{''.join(proxy.log)}")


async def test_sighup_renews_the_certificate_and_a_bad_one_is_kept_out(
    https_proxy, certs, tmp_path
):
    first = await asyncio.to_thread(peer_serial, https_proxy.url, certs.ca_file)
    renewed_cert, renewed_key = certs.issue("renewed")
    (tmp_path / "server.pem").write_bytes(renewed_cert.read_bytes())
    (tmp_path / "server.key").write_bytes(renewed_key.read_bytes())
    https_proxy.proc.send_signal(signal.SIGHUP)
    await wait_for_log(https_proxy, "certificate reloaded")
    second = await asyncio.to_thread(peer_serial, https_proxy.url, certs.ca_file)
    assert second != first

    # A renewal gone wrong (the key of another certificate) keeps the working pair.
    _, other_key = certs.issue("other")
    (tmp_path / "server.key").write_bytes(other_key.read_bytes())
    https_proxy.proc.send_signal(signal.SIGHUP)
    line = await wait_for_log(https_proxy, "certificate not reloaded")
    assert "is not the private key of" in line
    assert await asyncio.to_thread(peer_serial, https_proxy.url, certs.ca_file) == second
    assert https_proxy.proc.poll() is None


async def test_sighup_without_tls_keeps_the_proxy_serving(upstream, tmp_path, wheel_bytes):
    proxy = ProxyProcess(tmp_path / "cache", upstream.simple_url)
    try:
        proxy.proc.send_signal(signal.SIGHUP)
        await wait_for_log(proxy, "nothing to reload")
        async with aiohttp.ClientSession() as session:
            async with session.get(proxy.url + f"tinyalpha/{ALPHA}") as resp:
                assert (resp.status, await resp.read()) == (200, wheel_bytes(ALPHA))
        assert proxy.proc.poll() is None
    finally:
        proxy.stop()


def serve_once(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cacheproxy", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        (("missing.pem", "server.key"), "cannot read"),
        (("server.pem", "other.key"), "is not the private key of"),
        (("server.key", "server.key"), "not a PEM certificate chain"),
        (("server.pem", None), "go together"),
    ],
)
def test_unusable_certificate_files_exit_2_with_one_line(certs, tmp_path, files, needle):
    certs.issue("server")
    certs.issue("other")
    cert, key = files
    args = ["--cache-dir", str(tmp_path / "cache"), "--tls-cert", str(tmp_path / cert)]
    if key is not None:
        args += ["--tls-key", str(tmp_path / key)]
    result = serve_once(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr


async def test_a_socket_from_systemd_is_served_with_tls(certs, upstream, tmp_path, wheel_bytes):
    cert, key = certs.issue("server")
    sock = listening_socket()
    try:
        proxy = await asyncio.to_thread(
            ProxyProcess,
            tmp_path / "cache",
            upstream.simple_url,
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            launcher=as_fd_3(sock.fileno()),
            pass_fds=(sock.fileno(),),
        )
        try:
            assert proxy.url == f"https://127.0.0.1:{sock.getsockname()[1]}/simple/"
            assert any("from systemd: https://" in line for line in proxy.log)
            status, body = await fetch(proxy.url + f"tinyalpha/{ALPHA}", certs.ca_file)
            assert (status, body) == (200, wheel_bytes(ALPHA))
        finally:
            await asyncio.to_thread(proxy.stop)
    finally:
        sock.close()


def test_env_prints_https_urls_when_serve_would_use_tls(certs, tmp_path):
    cert, key = certs.issue("server")
    env = {**clean_env(), "CACHEPROXY_TLS_CERT": str(cert), "CACHEPROXY_TLS_KEY": str(key)}
    result = subprocess.run(
        [sys.executable, "-m", "cacheproxy", "env", "--format", "dotenv"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "PIP_INDEX_URL=https://127.0.0.1:3145/simple/" in result.stdout


async def test_poetry_locks_and_installs_over_https_trusting_the_ca(https_proxy, certs, tmp_path):
    from tests.test_client_matrix import client, poetry_env, poetry_install, project

    poetry = client("poetry", "poetry")
    root = project(
        tmp_path,
        "[tool.poetry]\npackage-mode = false\n\n"
        f'[[tool.poetry.source]]\nname = "proxy"\nurl = "{https_proxy.url}"\n'
        'priority = "primary"\n',
    )
    env = poetry_env(tmp_path)
    env["POETRY_CERTIFICATES_PROXY_CERT"] = str(certs.ca_file)  # the source named "proxy"
    await poetry_install(poetry, root, env, "lock")
    assert "tinyalpha" in (root / "poetry.lock").read_text()

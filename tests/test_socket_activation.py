"""systemd socket activation: the proxy serves on a socket it is handed, which outlives it."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys

import aiohttp
import pytest

from cacheproxy.errors import ActivationError
from cacheproxy.http.activation import inherited_sockets
from tests.fakes.clients import clean_env
from tests.fakes.process import ProxyProcess

ALPHA = "tinyalpha-2.0-py3-none-any.whl"


_AS_SYSTEMD_DOES = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); "
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def as_fd_3(fd: int) -> tuple[str, ...]:
    """A launcher that does what systemd does before exec: the socket as fd 3, and
    LISTEN_FDS / LISTEN_PID naming the process that will run (exec keeps the pid)."""
    return (sys.executable, "-c", _AS_SYSTEMD_DOES, str(fd))


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            return resp.status, await resp.read()


async def test_serves_on_the_handed_socket_and_requests_wait_through_a_restart(
    upstream, tmp_path, wheel_bytes
):
    sock = listening_socket()
    port = sock.getsockname()[1]

    def start() -> ProxyProcess:
        launcher = as_fd_3(sock.fileno())
        return ProxyProcess(
            tmp_path / "cache", upstream.simple_url, launcher=launcher, pass_fds=(sock.fileno(),)
        )

    try:
        first = await asyncio.to_thread(start)
        # The announced URL is the handed socket's, not the --port 0 on the command line.
        assert first.url == f"http://127.0.0.1:{port}/simple/"
        assert any("from systemd" in line for line in first.log)
        status, body = await get(first.url + f"tinyalpha/{ALPHA}")
        assert status == 200 and body == wheel_bytes(ALPHA)
        assert await asyncio.to_thread(first.stop) == 0

        # Nothing serves now, yet the port still accepts: a build that connects during a
        # restart waits in the socket's queue and is answered by the next process.
        waiting = asyncio.ensure_future(get(first.url + f"tinyalpha/{ALPHA}"))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        second = await asyncio.to_thread(start)
        try:
            status, body = await waiting
            assert status == 200 and body == wheel_bytes(ALPHA)
        finally:
            await asyncio.to_thread(second.stop)
        assert upstream.index.file_hits(ALPHA) == 1  # the second process used the same cache
    finally:
        sock.close()


async def test_real_systemd_socket_activate_starts_it_on_first_connection(upstream, tmp_path):
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is not installed (apt-get install systemd)")
    probe = listening_socket()
    port = probe.getsockname()[1]
    probe.close()
    command = [
        tool, "-l", f"127.0.0.1:{port}",
        "-E", f"CACHEPROXY_CACHE_DIR={tmp_path / 'cache'}",
        "-E", f"CACHEPROXY_UPSTREAM={upstream.simple_url}",
        sys.executable, "-m", "cacheproxy", "serve", "--port", "1",
    ]  # fmt: skip
    proc = await asyncio.to_thread(
        subprocess.Popen,
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
    )
    try:
        first_line = await asyncio.to_thread(proc.stdout.readline)
        assert "Listening on" in first_line
        # The proxy is started when this first connection arrives, and answers it.
        status, body = await get(f"http://127.0.0.1:{port}/simple/tinyalpha/{ALPHA}")
        assert status == 200 and len(body) > 0
    finally:
        proc.terminate()
        output = first_line + (await asyncio.to_thread(proc.communicate, timeout=15))[0]
    assert proc.returncode == 0, output
    assert f"UV_DEFAULT_INDEX=http://127.0.0.1:{port}/simple/" in output


def test_a_descriptor_that_is_not_a_socket_is_one_line_and_exit_2(tmp_path):
    script = 'exec 3</dev/null; export LISTEN_FDS=1 LISTEN_PID=$$; exec "$@"'
    env = clean_env()
    env["CACHEPROXY_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run(
        ["sh", "-c", script, "sh", sys.executable, "-m", "cacheproxy", "serve"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cacheproxy: error: socket activation: file descriptor 3 is not a socket: "
        "Socket operation on non-socket"
    ]


def test_sockets_meant_for_another_process_are_ignored_and_the_variables_cleared():
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "x", "OTHER": "kept"}
    assert inherited_sockets(env) == []
    assert env == {"OTHER": "kept"}
    assert inherited_sockets({}) == []
    with pytest.raises(ActivationError, match="not a number"):
        inherited_sockets({"LISTEN_FDS": "many"})

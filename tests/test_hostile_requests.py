"""Hostile requests against the proxy as a real process, reading the log it writes: a 4xx
with a reason, one access-log line each, and no secret in any log line."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time

import pytest

from tests.fakes.process import ProxyProcess

TOKEN = "s3cret-token-4242"
BASIC = base64.b64encode(f"ci:{TOKEN}".encode())
# Nothing listens there: every request here is refused before the upstream would be asked.
DEAD_UPSTREAM = "http://127.0.0.1:9/simple/"
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: ")


@pytest.fixture(scope="module", params=["text", "json"])
def running(request, tmp_path_factory):
    proxy = ProxyProcess(
        tmp_path_factory.mktemp("hostile"), DEAD_UPSTREAM, "--log-format", request.param
    )
    yield request.param, proxy
    proxy.stop()


async def send_raw(url: str, raw: bytes) -> bytes:
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(raw)
    answer = await reader.read()
    writer.close()
    return answer


def wait_for_log(proxy: ProxyProcess, needle: str) -> list[str]:
    """The log once a line holding needle is in it (the drain thread appends as it reads)."""
    deadline = time.monotonic() + 10
    while not any(needle in line for line in proxy.log):
        assert time.monotonic() < deadline, f"no {needle!r} in: {''.join(proxy.log)}"
        time.sleep(0.02)
    return list(proxy.log)


def assert_one_record_per_line(log_format: str, lines: list[str]) -> None:
    for line in lines:
        assert line.endswith("\n") and "\r" not in line
        if log_format == "json":
            json.loads(line)
        else:
            assert TEXT_LINE.match(line), line


@pytest.mark.parametrize(
    "bad_header",
    [
        b"Authorization: Basic " + BASIC + b"\x01",
        f"Authorization: Bearer {TOKEN}\x7f".encode(),
        f"Proxy-Authorization: Bearer {TOKEN}\nX-Next: \x01".encode(),
        f"Cookie: session={TOKEN}\x00".encode(),
    ],
)
async def test_malformed_request_logs_no_credentials_on_one_line(running, bad_header):
    log_format, proxy = running
    # Not a valid name: answered at once, without asking the upstream.
    marker = f"/simple/-marker-{abs(hash(bad_header))}/"
    raw = b"GET /simple/ HTTP/1.1\r\nHost: proxy\r\n" + bad_header + b"\r\n\r\n"
    answer = await send_raw(proxy.url, raw)
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
    # A well-formed request after it: once its access line is there, so is the warning.
    await send_raw(
        proxy.url, f"GET {marker} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n".encode()
    )
    lines = wait_for_log(proxy, marker)
    text = "".join(lines)
    assert "bad request" in text
    assert TOKEN not in text and BASIC.decode() not in text
    assert "Traceback" not in text
    assert_one_record_per_line(log_format, lines)


@pytest.mark.parametrize("control", ["%0a", "%0d", "%00", "%0D%0A"])
@pytest.mark.parametrize(
    "template", ["/simple/alpha{c}/", "/simple/tinyalpha/tinyalpha-1.0-py3-none-any.whl{c}"]
)
async def test_control_characters_in_names_are_a_400_with_an_access_line(
    running, template, control
):
    log_format, proxy = running
    path = template.format(c=control)
    raw = f"GET {path} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n".encode()
    answer = await send_raw(proxy.url, raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"not a valid" in body
    lines = wait_for_log(proxy, path)
    access = [line for line in lines if path in line and " 400 " in line]
    assert access, "".join(lines)
    assert_one_record_per_line(log_format, lines)

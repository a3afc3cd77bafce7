"""Credentials never reach a log or an error: redaction, one-line records, config errors."""

import json
import logging
import os
import subprocess
import sys

import pytest

from cacheproxy.ops.logs import JsonFormatter, TextFormatter
from cacheproxy.ops.redact import redact_request, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cret@host/simple/", "https://***@host/simple/"),
        ("https://tok@host:8443/x?a=b@c", "https://***@host:8443/x?a=b@c"),
        ("http://u:p@ss@host/", "http://***@host/"),
        ("see https://a:b@x/ and http://y/", "see https://***@x/ and http://y/"),
        ("https://host/simple/pkg@1.0/", "https://host/simple/pkg@1.0/"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "text",
    [
        "Invalid header value char:\n\n  b'Authorization: Basic dXNlcjpzM2NyZXQ=\\x01'\n   ^",
        "b'GET / HTTP/1.1\\r\\nCookie: s3cret\\r\\nHost: x\\r\\n'",
        "Invalid HTTP header: b'Bearer s3cret\\x7f'",
        "proxy-authorization:s3cret",
        "GET http://me:s3cret@host/ HTTP/1.1",
    ],
)
def test_redact_request(text):
    redacted = redact_request(text)
    assert "s3cret" not in redacted and "dXNlcjpzM2NyZXQ" not in redacted
    assert "***" in redacted


@pytest.mark.parametrize("formatter", [TextFormatter("%(levelname)s %(message)s"), JsonFormatter()])
def test_every_record_is_one_physical_line(formatter):
    message = "a\nforged 2026-01-01 INFO line\r\x1b[2J\x85\u2028end"
    try:
        raise ValueError("with\na traceback")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, "f", 1, message, (), sys.exc_info())
    line = formatter.format(record)
    assert len(line.splitlines()) == 1 and "\x1b" not in line
    if isinstance(formatter, JsonFormatter):
        assert json.loads(line)["message"] == message


@pytest.mark.parametrize(
    "args",
    [
        ["--indexes", "https://user:s3cret@host/simple/"],
        ["--indexes", "in=https://user:s3cret@host/simple/?x=1,https://user:s3cret@h/?q=1"],
        ["--indexes", "bad=ftp://user:s3cret@host/simple/"],
        ["--upstream", "ftp://user:s3cret@host/simple/"],
        ["--public-url", "https://user:s3cret@host/"],
    ],
)
def test_bad_urls_in_settings_exit_2_without_the_password(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEPROXY_")}
    result = subprocess.run(
        [sys.executable, "-m", "cacheproxy", "serve", "--cache-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "s3cret" not in result.stderr + result.stdout

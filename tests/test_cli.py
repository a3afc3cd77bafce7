"""The command line as a user runs it: a real process."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

CLI = [sys.executable, "-m", "cacheproxy"]


def run_cli(*args, env=None, timeout=20):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CACHEPROXY_")}
    environ.update(env or {})
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=environ, timeout=timeout
    )


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--port", "notaport"], {}, "--port"),
        (["--port", "99999"], {}, "--port"),
        ([], {"CACHEPROXY_PORT": "x"}, "CACHEPROXY_PORT"),
        (["--upstream", "file:///etc"], {}, "--upstream"),
        (["--max-size", "12 parsecs"], {}, "--max-size"),
        (["--page-ttl", "soon"], {}, "--page-ttl"),
        (["--config", "/nonexistent/cacheproxy.toml"], {}, "does not exist"),
        (["--auth-tokens", "short"], {}, "--auth-tokens"),
        (["--auth-tokens-file", "/nonexistent/tokens"], {}, "cannot read the tokens file"),
        (["--log-format", "xml"], {}, "--log-format"),
    ],
)
def test_bad_values_exit_2_with_one_line(args, env, needle, tmp_path):
    result = run_cli("serve", "--cache-dir", str(tmp_path), *args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_clean_error(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli("serve", "--cache-dir", str(tmp_path), "--port", str(port))
    assert result.returncode == 2
    assert "cannot serve" in result.stderr and "Traceback" not in result.stderr


def test_serve_announces_index_url_and_stops_on_sigterm(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CACHEPROXY_")}
    environ["CACHEPROXY_CACHE_DIR"] = str(tmp_path / "cache")
    environ["CACHEPROXY_UPSTREAM"] = "http://127.0.0.1:9/simple/"
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", "0"], stderr=subprocess.PIPE, text=True, env=environ
    )
    try:
        # The CA made on first start and the transparent face are announced first.
        lines, match = [], None
        while match is None and len(lines) < 10:
            lines.append(proc.stderr.readline())
            match = re.search(r"UV_DEFAULT_INDEX=(http://127\.0\.0\.1:\d+/simple/)", lines[-1])
        assert match, lines
        with urllib.request.urlopen(match.group(1).replace("/simple/", "/health")) as resp:
            assert resp.status == 200
        assert (tmp_path / "cache" / "store").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in proc.stderr.read()


def test_version_and_help():
    assert run_cli("--version").stdout.startswith("cacheproxy, version")
    help_text = run_cli("serve", "--help").stdout
    for flag in ("--host", "--port", "--cache-dir", "--upstream", "CACHEPROXY_PORT"):
        assert flag in help_text


def test_file_hosts_flag_is_repeatable_and_bad_ones_exit_2(tmp_path):
    result = run_cli(
        "serve", "--cache-dir", str(tmp_path), "--file-hosts", "a.example", "--file-hosts", "b/c"
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--file-hosts" in result.stderr
    assert "'b/c'" in result.stderr

"""What serve says at start: a cache dir it cannot use, and the offline switch."""

import os
import subprocess
import sys

import pytest

from cacheproxy.config import load_config
from tests.fakes.process import ProxyProcess


def serve_once(*args, env=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CACHEPROXY_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cacheproxy", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("cache_dir", "reason"),
    [
        ("/proc/nope", "cannot be created here"),
        ("{file}/cache", "is a file, not a directory"),
    ],
)
def test_an_unusable_cache_dir_is_named_with_what_is_wrong(tmp_path, cache_dir, reason):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    path = cache_dir.format(file=a_file)
    result = serve_once("--cache-dir", path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"cache dir {path}:" in result.stderr and reason in result.stderr
    assert "cannot serve on" not in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_a_cache_dir_without_write_permission_says_so(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = serve_once("--cache-dir", str(locked / "cache"))
    assert result.returncode == 2 and "not writable" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "offline"),
    [
        (("--offline",), {}, True),
        ((), {"CACHEPROXY_OFFLINE": "true"}, True),
        (("--online",), {"CACHEPROXY_OFFLINE": "yes"}, False),
        ((), {}, False),
    ],
)
def test_offline_is_a_switch_and_the_start_up_line_says_so(
    upstream, tmp_path, monkeypatch, args, env, offline
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # ProxyProcess passes the environment on
    proxy = ProxyProcess(tmp_path / "cache", upstream.simple_url, *args)
    try:
        line = next(line for line in proxy.log if "UV_DEFAULT_INDEX=" in line)
        assert ("serving offline" in line) is offline, line
    finally:
        assert proxy.stop() == 0


def test_offline_takes_no_value():
    result = serve_once("--offline", "true")
    assert result.returncode == 2 and "unexpected extra argument" in result.stderr.lower()


def test_offline_from_the_file_and_the_environment_and_the_switch_beats_both(tmp_path):
    file = tmp_path / "cacheproxy.toml"
    file.write_text("offline = true\n")
    assert load_config({}, {}, file).offline is True
    assert load_config({}, {"CACHEPROXY_OFFLINE": "off"}, file).offline is False
    assert load_config({"offline": False}, {"CACHEPROXY_OFFLINE": "1"}, file).offline is False
    assert load_config({"offline": True}, {}, None).offline is True


def test_the_object_store_client_is_loaded_only_for_a_shared_tier():
    """Its modules are about 10 MiB of a sidecar's memory; a node without the tier never needs
    them (the tier's own tests load them when they open a bucket)."""
    probe = (
        "import sys, cacheproxy.cli.main, cacheproxy.http.app; print('aiobotocore' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_ca_library_is_loaded_only_when_the_face_opens_its_ca():
    """cryptography is about 8 MiB of a process: the commands and a proxy with the transparent
    face off never load it; opening the CA does."""
    probe = (
        "import sys, cacheproxy.cli.main, cacheproxy.http.server, cacheproxy.http.connect\n"
        "print('cryptography' in sys.modules)\n"
        "import tempfile\nfrom pathlib import Path\n"
        "from cacheproxy.config import Config\n"
        "from cacheproxy.http.trust import open_authority\n"
        "open_authority(Config(cache_dir=Path(tempfile.mkdtemp()), upstream='https://pkgs.test/simple/'))\n"
        "print('cryptography' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]

"""cacheproxy warm: a lock or requirements file fetched through a running proxy, after which
installs need no upstream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from cacheproxy.cli.warm import Wanted, parse_pylock, parse_requirements, parse_uv_lock, warm
from tests.fakes.clients import clean_env, uv_pip_install

ALPHA2 = "tinyalpha-2.0-py3-none-any.whl"
BETA = "beta_helper-1.0-py3-none-any.whl"


def uv_lock_for(upstream) -> str:
    """A lock as uv writes it against another index: absolute URLs of that index's files."""
    blocks = ['version = 1\nrequires-python = ">=3.8"\n']
    for project, filename in (("tinyalpha", ALPHA2), ("beta-helper", BETA)):
        entry = upstream.index.files[filename]
        url = upstream.simple_url.removesuffix("/simple/") + entry.url_path
        blocks.append(
            f'[[package]]\nname = "{project}"\nversion = "{filename.split("-")[1]}"\n'
            f'source = {{ registry = "{upstream.simple_url}" }}\n'
            f'wheels = [\n  {{ url = "{url}", hash = "sha256:{entry.sha256}", size = 1 }},\n]\n'
        )
    return "\n".join(blocks)


async def cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cacheproxy", "warm", *args]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, env=clean_env()
    )


async def test_warm_from_uv_lock_then_install_with_the_upstream_gone(proxy, upstream, tmp_path):
    lock = tmp_path / "uv.lock"
    lock.write_text(uv_lock_for(upstream))
    result = await cli(str(lock), "--index-url", proxy.url)
    assert result.returncode == 0, result.stderr
    # Each wheel and its .metadata file.
    assert result.stdout.startswith("4 files fetched, 0 already cached")
    assert upstream.index.file_hits(ALPHA2) == upstream.index.file_hits(BETA) == 1

    again = await cli(str(lock), "--index-url", proxy.url)
    assert again.stdout.startswith("0 files fetched, 4 already cached"), again.stdout

    await upstream.stop()
    (await uv_pip_install(proxy.url, tmp_path / "t", "tinyalpha==2.0")).assert_ok()
    assert (tmp_path / "t" / "beta_helper-1.0.dist-info").is_dir()


async def test_warm_from_pylock_fetches_exactly_the_named_files(proxy, upstream):
    entry = upstream.index.files[BETA]
    pylock = f"""
lock-version = "1.0"
created-by = "uv"
[[packages]]
name = "Beta_Helper"
version = "1.0"
[[packages.wheels]]
name = "{BETA}"
url = "https://files.example.org/{BETA}"
hashes = {{ sha256 = "{entry.sha256}" }}
"""
    wants = parse_pylock(pylock)
    assert wants == [Wanted("beta-helper", frozenset({BETA}))]
    totals = []
    report = await warm(wants, proxy.url, on_total=totals.append)
    assert totals == [2] and sorted(report.fetched) == [BETA, BETA + ".metadata"]
    assert upstream.index.file_hits("tinyalpha-1.0-py3-none-any.whl") == 0


async def test_warm_from_requirements_pinned_and_unpinned(proxy, upstream, tmp_path):
    alpha1 = upstream.index.files["tinyalpha-1.0-py3-none-any.whl"]
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "# pinned with a hash, and one left to the resolver\n"
        f"tinyalpha==1.0 \\\n    --hash=sha256:{alpha1.sha256}\n"
        "beta-helper>=1.0\n"
    )
    result = await cli(str(requirements), "--index-url", proxy.url)
    assert result.returncode == 0, result.stderr
    assert "resolving 1 unpinned requirements with pip" in result.stderr
    assert upstream.index.file_hits("tinyalpha-1.0-py3-none-any.whl") == 1
    assert upstream.index.file_hits(BETA) == 1  # fetched by pip through the proxy
    assert upstream.index.file_hits(ALPHA2) == 0


def test_requirements_parsing():
    wants, unresolved = parse_requirements(
        "Foo_Bar[extra]==1.2 ; python_version >= '3.8'  # comment\n"
        "-r other.txt\n--index-url http://x/simple/\nbaz>=2\nqux===3.0\n"
    )
    assert wants == [Wanted("foo-bar", version="1.2"), Wanted("qux", version="3.0")]
    assert unresolved == ["-r other.txt", "baz>=2"]


def test_uv_lock_parsing_takes_sdists_and_every_wheel():
    lock = """
version = 1
[[package]]
name = "Demo"
version = "1.0"
sdist = { url = "https://files.example.org/demo-1.0.tar.gz", hash = "sha256:00" }
wheels = [
  { url = "https://files.example.org/demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl" },
  { url = "https://files.example.org/demo-1.0-cp311-cp311-macosx_11_0_arm64.whl" },
]
[[package]]
name = "local-project"
version = "0.1"
source = { editable = "." }
"""
    [demo] = parse_uv_lock(lock)
    assert demo.project == "demo" and len(demo.filenames) == 3


async def test_bad_inputs_are_one_line_errors(proxy, tmp_path):
    unknown = tmp_path / "deps.json"
    unknown.write_text("{}")
    result = await cli(str(unknown), "--index-url", proxy.url)
    assert result.returncode == 2
    assert result.stderr.startswith("cacheproxy: error: ") and result.stderr.count("\n") == 1

    broken = tmp_path / "uv.lock"
    broken.write_text("[[package]\n")
    result = await cli(str(broken), "--index-url", proxy.url)
    assert result.returncode == 2 and "not a valid lock file" in result.stderr

    broken.write_text(
        '[[package]]\nname = "x"\nwheels = [{ url = "http://h/x-1-py3-none-any.whl" }]\n'
    )
    result = await cli(str(broken), "--index-url", "http://127.0.0.1:9/simple/")
    assert result.returncode == 2 and "cannot reach the proxy" in result.stderr


async def test_missing_project_fails_with_exit_1(proxy, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("tinyalpha==2.0\nno-such-project==1.0\n")
    result = await cli(str(requirements), "--index-url", proxy.url)
    assert result.returncode == 1
    assert "failed: no-such-project: the proxy answered 404" in result.stderr
    assert result.stdout.startswith("2 files fetched")  # the rest was still warmed


def test_cli_reads_the_proxy_address_from_settings(tmp_path):
    lock = tmp_path / "uv.lock"
    lock.write_text("version = 1\n")
    env = {**clean_env(), "CACHEPROXY_PORT": "9"}
    result = subprocess.run(
        [sys.executable, "-m", "cacheproxy", "warm", str(lock)],
        capture_output=True,
        text=True,
        env=env,
    )
    # Nothing to fetch, so no connection is needed: the summary names the URL it would use.
    assert result.returncode == 0, result.stderr
    assert "http://127.0.0.1:9/simple/" in result.stdout
    assert Path(lock).exists()

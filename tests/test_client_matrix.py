"""The client matrix: uv, current pip, the oldest supported pip, pip-tools, poetry and pdm, each a
real process installing through the proxy in front of the local fake upstream.

The extra clients live in venvs of their own, made by tests/clients/install-clients (CI runs
it) under $CACHEPROXY_CLIENTS_DIR (default: <repo>/.clients); a missing one is skipped with that
reason. Every client is cut off from this machine's configuration (pip.conf, uv.toml, user
config, keyring, proxies) and from every host but 127.0.0.1, so the only index it can reach is
the proxy: a client that tried any other index would fail, not quietly succeed.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from uv import find_uv_bin

from tests.fakes.clients import CompletedRun, clean_env, run

if sys.version_info >= (3, 11):
    import tomllib
else:  # the project supports 3.10, where tomli (a dependency there) stands in
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
CLIENTS = Path(os.environ.get("CACHEPROXY_CLIENTS_DIR") or REPO / ".clients")
WHEELS = ("tinyalpha-2.0-py3-none-any.whl", "beta_helper-1.0-py3-none-any.whl")
TIMEOUT = 120  # seconds per client process
# Nothing listens on the discard port: a request to any host but the loopback one fails at once.
NOWHERE = "http://127.0.0.1:9"
MODES = pytest.mark.parametrize("mode", ["json", "html"])


def client(name: str, executable: str) -> str:
    path = CLIENTS / name / "bin" / executable
    if not path.exists():
        pytest.skip(f"{name} is not installed: run tests/clients/install-clients")
    return str(path)


def isolated_env(tmp_path: Path) -> dict[str, str]:
    """clean_env() (no PIP_*/UV_*, PIP_CONFIG_FILE=/dev/null, UV_NO_CONFIG) and also: no POETRY_*
    or PDM_* settings, no active venv, a fresh home (no user config, cache or netrc), no system
    uv.toml, no keyring, and every non-loopback host unreachable."""
    env = {
        key: value
        for key, value in clean_env().items()
        if not key.startswith(("POETRY_", "PDM_", "VIRTUAL_ENV", "CONDA_", "PYTHON"))
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    home = tmp_path / "home"
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CONFIG_DIRS=str(home / ".etc"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        NETRC=os.devnull,
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        PYTHONDONTWRITEBYTECODE="1",
    )
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[var] = env[var.lower()] = NOWHERE
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def uv_env(tmp_path: Path, cache: str) -> dict[str, str]:
    env = isolated_env(tmp_path)
    env.update(
        UV_CACHE_DIR=str(tmp_path / cache),
        UV_PYTHON=sys.executable,
        UV_PYTHON_DOWNLOADS="never",
    )
    return env


def project(tmp_path: Path, tool_table: str) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        "[project]\n"
        'name = "app"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
        'dependencies = ["tinyalpha"]\n\n' + tool_table
    )
    return root


def pins(output: str) -> dict[str, set[str]]:
    """`name==version` -> its sha256 hashes, from a requirements file made with hashes."""
    found: dict[str, set[str]] = {}
    current = None
    for line in output.splitlines():
        if match := re.match(r"^([A-Za-z0-9][\w.-]*==\S+)", line):
            current = found.setdefault(match[1], set())
        if current is not None:
            current.update(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return found


def expected_pins(upstream) -> dict[str, set[str]]:
    return {
        "beta-helper==1.0": {upstream.index.files[WHEELS[1]].sha256},
        "tinyalpha==2.0": {upstream.index.files[WHEELS[0]].sha256},
    }


def fresh_checkout(root: Path, tmp_path: Path, *names: str) -> Path:
    """A new directory with only the given files of the project (no venv, no caches)."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in names:
        shutil.copy(root / name, copy / name)
    return copy


async def make_venv(path: Path, env: dict[str, str]) -> Path:
    """A venv from the interpreter running the tests, so every client installs for it."""
    await ok([sys.executable, "-m", "venv", "--without-pip", str(path)], env)
    return path / "bin" / "python"


def assert_fetched_through_proxy(upstream) -> None:
    """The upstream saw the project page (so the client asked the proxy), and each wheel was
    fetched from the upstream at most once, however many client runs the test made."""
    assert upstream.index.page_hits("tinyalpha") >= 1
    for wheel in WHEELS:
        assert upstream.index.file_hits(wheel) <= 1, (wheel, upstream.index.requests)


async def assert_importable(python: Path, env: dict[str, str]) -> None:
    result = await run(
        [str(python), "-c", "import tinyalpha, beta_helper; print(tinyalpha.__version__)"],
        env,
        TIMEOUT,
    )
    result.assert_ok()
    assert result.stdout.strip() == "2.0"


async def ok(args: list[str], env: dict[str, str]) -> CompletedRun:
    return (await run(args, env, TIMEOUT)).assert_ok()


# How each client is driven. `work` is a directory of the client's own: its home, caches and
# project live there, so several clients can run through one proxy in one test.


async def uv_pip_compile(index: str, work: Path) -> dict[str, set[str]]:
    (work / "requirements.in").write_text("tinyalpha\n")
    result = await ok(
        [find_uv_bin(), "pip", "compile", "--no-header", "--generate-hashes", "--index-url",
         index, str(work / "requirements.in")],
        uv_env(work, "uv-cache"),
    )  # fmt: skip
    return pins(result.stdout)


async def pip_install(pip: list[str], index: str, work: Path) -> Path:
    target = work / "target"
    await ok(
        [*pip, "install", "--no-cache-dir", "--target", str(target), "--index-url", index,
         "tinyalpha==2.0"],
        isolated_env(work),
    )  # fmt: skip
    installed = sorted(p.name for p in target.iterdir() if p.name.endswith(".dist-info"))
    assert installed == ["beta_helper-1.0.dist-info", "tinyalpha-2.0.dist-info"]
    assert (target / "tinyalpha" / "__init__.py").read_text() == '__version__ = "2.0"\n'
    return target


async def pip_tools_compile(pip_compile: str, index: str, work: Path) -> dict[str, set[str]]:
    (work / "requirements.in").write_text("tinyalpha\n")
    result = await ok(
        [pip_compile, "--quiet", "--no-header", "--no-annotate", "--generate-hashes",
         "--index-url", index, "--cache-dir", str(work / "pip-tools-cache"),
         "--output-file", "-", str(work / "requirements.in")],
        isolated_env(work),
    )  # fmt: skip
    return pins(result.stdout)


def poetry_env(work: Path, cache: str = "poetry-cache") -> dict[str, str]:
    env = isolated_env(work)
    env.update(
        POETRY_CACHE_DIR=str(work / cache),
        POETRY_VIRTUALENVS_IN_PROJECT="true",
        POETRY_NO_INTERACTION="1",
    )
    return env


async def poetry_install(poetry: str, root: Path, env: dict[str, str], *lock: str) -> None:
    python = await make_venv(root / ".venv", env)  # poetry uses the in-project venv as is
    if lock:
        await ok([poetry, "--directory", str(root), *lock], env)
    await ok([poetry, "--directory", str(root), "install", "--no-root"], env)
    await assert_importable(python, env)


async def poetry_lock_and_install(poetry: str, index: str, work: Path) -> Path:
    root = project(
        work,
        "[tool.poetry]\npackage-mode = false\n\n"
        f'[[tool.poetry.source]]\nname = "proxy"\nurl = "{index}"\npriority = "primary"\n',
    )
    await poetry_install(poetry, root, poetry_env(work), "lock")
    return root


def pdm_env(work: Path, cache: str = "pdm-cache") -> dict[str, str]:
    env = isolated_env(work)
    env.update(PDM_CACHE_DIR=str(work / cache), PDM_CHECK_UPDATE="false", PDM_NON_INTERACTIVE="1")
    return env


async def pdm_install(pdm: str, root: Path, env: dict[str, str], *commands: list[str]) -> None:
    # The project's own venv (left to itself, pdm picks whatever Python it finds first).
    python = await make_venv(root / ".venv", env)
    await ok([pdm, "use", "-p", str(root), "-f", str(python)], env)
    for command in commands:
        await ok([pdm, command[0], "-p", str(root), *command[1:]], env)
    await assert_importable(python, env)


async def pdm_lock_and_install(pdm: str, index: str, work: Path) -> Path:
    root = project(
        work,
        "[tool.pdm]\ndistribution = false\n\n"
        # A source named "pypi" replaces the default index, so no other index is consulted.
        f'[[tool.pdm.source]]\nname = "pypi"\nurl = "{index}"\n',
    )
    await pdm_install(pdm, root, pdm_env(work), ["lock"], ["install", "--no-self"])
    return root


def locked_files(lock: dict, upstream) -> dict[str, str]:
    """name -> version of a poetry or pdm lock, checking each file's hash on the way."""
    for package in lock["package"]:
        (entry,) = package["files"]
        assert entry["hash"] == "sha256:" + upstream.index.files[entry["file"]].sha256
    return {package["name"]: package["version"] for package in lock["package"]}


# uv


@MODES
async def test_uv_pip_compile(proxy, upstream, tmp_path, mode):
    upstream.index.mode = mode
    assert await uv_pip_compile(proxy.url, tmp_path) == expected_pins(upstream)
    assert_fetched_through_proxy(upstream)


@MODES
async def test_uv_lock_sync_then_frozen_sync_with_upstream_gone(proxy, upstream, tmp_path, mode):
    upstream.index.mode = mode
    root = project(tmp_path, f'[[tool.uv.index]]\nurl = "{proxy.url}"\ndefault = true\n')
    # Project commands must read [tool.uv] from pyproject.toml, which UV_NO_CONFIG would hide.
    env = uv_env(tmp_path, "uv-cache")
    del env["UV_NO_CONFIG"]
    uv = [find_uv_bin(), "--directory"]
    await ok([*uv, str(root), "lock"], env)
    await ok([*uv, str(root), "sync"], env)
    await assert_importable(root / ".venv" / "bin" / "python", env)

    lock = tomllib.loads((root / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"] if p["name"] != "app"}
    assert {n: p["version"] for n, p in packages.items()} == {
        "tinyalpha": "2.0",
        "beta-helper": "1.0",
    }
    for name, package in packages.items():
        assert package["source"] == {"registry": proxy.url}
        (wheel,) = package["wheels"]
        filename = wheel["url"].rsplit("/", 1)[-1]
        # Absolute URLs on the proxy: a frozen sync downloads from exactly these.
        assert wheel["url"] == f"{proxy.url}{name}/{filename}"
        assert wheel["hash"] == "sha256:" + upstream.index.files[filename].sha256
        if mode == "json":  # PEP 700 upload-time passed through
            assert wheel["upload-time"] == "2024-01-02T03:04:05Z"

    # A fresh checkout, a fresh uv cache, and no upstream: the proxy alone serves the lock.
    await upstream.stop()
    copy = fresh_checkout(root, tmp_path, "pyproject.toml", "uv.lock")
    await ok([*uv, str(copy), "sync", "--frozen"], env | {"UV_CACHE_DIR": str(tmp_path / "c2")})
    await assert_importable(copy / ".venv" / "bin" / "python", env)
    assert_fetched_through_proxy(upstream)


@MODES
async def test_uv_exclude_newer_sees_upload_time(proxy, upstream, tmp_path, mode):
    upstream.index.mode = mode
    command = [find_uv_bin(), "pip", "install", "--python", sys.executable, "--index-url",
               proxy.url]  # fmt: skip
    if mode == "html":
        # An HTML upstream states no upload time: the proxy learns it (the file host's
        # Last-Modified) once it has cached the file, so warm it first.
        await ok([*command, "--target", str(tmp_path / "warm"), "tinyalpha"],
                 uv_env(tmp_path, "uv-cache-warm"))  # fmt: skip
    # Every file was uploaded 2024-01-02: before that nothing exists, after it all of it does.
    old = await run(
        [*command, "--target", str(tmp_path / "old"), "--exclude-newer", "2023-01-01",
         "tinyalpha"],
        uv_env(tmp_path, "uv-cache-old"),
        TIMEOUT,
    )  # fmt: skip
    assert old.returncode != 0, old.stdout
    assert "no versions of tinyalpha" in old.stderr.lower(), old.stderr
    await ok(
        [*command, "--target", str(tmp_path / "new"), "--exclude-newer", "2025-01-01",
         "tinyalpha"],
        uv_env(tmp_path, "uv-cache-new"),
    )  # fmt: skip
    assert (tmp_path / "new" / "tinyalpha-2.0.dist-info").is_dir()
    assert_fetched_through_proxy(upstream)


# pip, current and oldest


@MODES
@pytest.mark.parametrize("which", ["pip-old", "pip"])
async def test_pip_install_target(proxy, upstream, tmp_path, which, mode):
    upstream.index.mode = mode
    pip = [client("pip-old", "pip")] if which == "pip-old" else [sys.executable, "-m", "pip"]
    await pip_install(pip, proxy.url, tmp_path)
    assert_fetched_through_proxy(upstream)


# pip-tools


@MODES
async def test_pip_tools_compile(proxy, upstream, tmp_path, mode):
    upstream.index.mode = mode
    pip_compile = client("pip-tools", "pip-compile")
    assert await pip_tools_compile(pip_compile, proxy.url, tmp_path) == expected_pins(upstream)
    assert_fetched_through_proxy(upstream)


# poetry and pdm: lock, install, then install the lock again in a fresh checkout with the
# upstream gone. Neither lock records file URLs, so that install reads the project pages again:
# the proxy (page TTL 0, so it has to try the upstream first) must serve its stored copies.


@MODES
async def test_poetry_lock_and_install(make_proxy, upstream, tmp_path, mode):
    upstream.index.mode = mode
    poetry = client("poetry", "poetry")
    proxy = await make_proxy(page_ttl=0)
    root = await poetry_lock_and_install(poetry, proxy.url, tmp_path)
    lock = tomllib.loads((root / "poetry.lock").read_text())
    assert locked_files(lock, upstream) == {"tinyalpha": "2.0", "beta-helper": "1.0"}
    for package in lock["package"]:
        assert package["source"] == {"type": "legacy", "url": proxy.url.rstrip("/"),
                                     "reference": "proxy"}  # fmt: skip

    await upstream.stop()
    copy = fresh_checkout(root, tmp_path, "pyproject.toml", "poetry.lock")
    await poetry_install(poetry, copy, poetry_env(tmp_path, "poetry-cache-2"))
    assert_fetched_through_proxy(upstream)


@MODES
async def test_pdm_lock_and_install(make_proxy, upstream, tmp_path, mode):
    upstream.index.mode = mode
    pdm = client("pdm", "pdm")
    proxy = await make_proxy(page_ttl=0)
    root = await pdm_lock_and_install(pdm, proxy.url, tmp_path)
    lock = tomllib.loads((root / "pdm.lock").read_text())
    assert locked_files(lock, upstream) == {"tinyalpha": "2.0", "beta-helper": "1.0"}

    await upstream.stop()
    copy = fresh_checkout(root, tmp_path, "pyproject.toml", "pdm.lock")
    env = pdm_env(tmp_path, "pdm-cache-2")
    await pdm_install(pdm, copy, env, ["install", "--frozen-lockfile", "--no-self"])
    assert_fetched_through_proxy(upstream)


# All of them through one proxy


async def test_every_client_shares_one_cache(proxy, upstream, tmp_path):
    """Each client asks in its own way (JSON or HTML, metadata or whole wheels, conditional
    page requests); the proxy still fetches each page, metadata file and wheel from the
    upstream once."""
    pip_old = client("pip-old", "pip")
    pip_compile = client("pip-tools", "pip-compile")
    poetry = client("poetry", "poetry")
    pdm = client("pdm", "pdm")
    work = {}
    for name in ("uv", "pip", "pip-old", "pip-tools", "poetry", "pdm"):
        work[name] = tmp_path / name
        work[name].mkdir()
    assert await uv_pip_compile(proxy.url, work["uv"]) == expected_pins(upstream)
    await pip_install([sys.executable, "-m", "pip"], proxy.url, work["pip"])
    await pip_install([pip_old], proxy.url, work["pip-old"])
    assert await pip_tools_compile(pip_compile, proxy.url, work["pip-tools"]) == expected_pins(
        upstream
    )
    await poetry_lock_and_install(poetry, proxy.url, work["poetry"])
    await pdm_lock_and_install(pdm, proxy.url, work["pdm"])

    for project_name in ("tinyalpha", "beta-helper"):
        assert upstream.index.page_hits(project_name) == 1, upstream.index.requests
    for wheel in WHEELS:
        assert upstream.index.file_hits(wheel) == 1, upstream.index.requests
        assert upstream.index.file_hits(wheel + ".metadata") <= 1, upstream.index.requests

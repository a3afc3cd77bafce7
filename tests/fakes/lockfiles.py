"""Projects locked by real clients directly against an upstream, and their lock installs.

Each `lock_*` helper writes a small project into a directory and makes its lock file with the
client itself, against the upstream's own URL (no proxy), the way a developer locks on a laptop:
uv.lock (`uv lock`), a PEP 751 pylock.toml (`uv export`), poetry.lock, pdm.lock (static URLs)
and Pipfile.lock. Each `install_*` helper installs such a lock into a fresh environment inside
the project and reads back what got installed. What the clients are told beyond that (the
upstream's CA directly, or the lines of `cacheproxy env --transparent`) is the `env` passed in:
`client_env` builds one isolated from this machine's configuration.

poetry, pdm, pipenv and the pip that reads pylock.toml live in their own venvs
(tests/clients/install-clients); `client` finds them and says why when one is missing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from uv import find_uv_bin

from tests.fakes.clients import CompletedRun, clean_env, run
from tests.fakes.upstream import UpstreamIndex

REPO = Path(__file__).resolve().parent.parent.parent
CLIENTS = Path(os.environ.get("CACHEPROXY_CLIENTS_DIR") or REPO / ".clients")

# The project every lock is made for: one dependency with one of its own, so each lock holds a
# resolution, not just a name.
REQUIREMENT = "tinyalpha==2.0"
INSTALLED = ("beta_helper-1.0", "tinyalpha-2.0")
# The interpreter every project environment is made from: the base one, never the test run's
# venv (a client told to use a venv's python installs into that venv).
PYTHON = getattr(sys, "_base_executable", None) or sys.executable

# What every client may read of this machine that would change where it goes or what it
# trusts: dropped, then set again by `client_env`.
_MACHINE = (
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_CERT",
    "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
    "NO_PROXY", "no_proxy", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH",
)  # fmt: skip
_PREFIXES = ("PIP_", "UV_", "POETRY_", "PDM_", "PIPENV_")


class ClientMissing(Exception):
    """A client is not installed; the message says how to install it."""


def client(venv: str, executable: str) -> Path:
    path = CLIENTS / venv / "bin" / executable
    if not path.exists():
        raise ClientMissing(f"{venv} is not installed: run tests/clients/install-clients")
    return path


def client_env(home: Path, trust: Path | None = None, extra: Mapping[str, str] = ()) -> dict:
    """An environment for any of the clients, isolated from this machine: no index, proxy or
    trust settings of its own, a private HOME (so no user config of poetry, pdm or pipenv is
    read) and private caches. `trust`: the one CA file every client trusts (uv SSL_CERT_FILE,
    requests REQUESTS_CA_BUNDLE, pip PIP_CERT). `extra` (say, the lines of `cacheproxy env
    --transparent`) wins over all."""
    env = {k: v for k, v in clean_env().items() if not k.startswith(_PREFIXES)}
    for name in _MACHINE:
        env.pop(name, None)
    home.mkdir(parents=True, exist_ok=True)
    # No UV_NO_CONFIG here: it would hide the project's own [[tool.uv.index]] too. uv's user
    # and system uv.toml are under the private XDG directories instead.
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CONFIG_DIRS=str(home / ".config-system"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        UV_CACHE_DIR=str(home / "uv-cache"),
        UV_PYTHON_DOWNLOADS="never",
        POETRY_CONFIG_DIR=str(home / "poetry-config"),
        POETRY_CACHE_DIR=str(home / "poetry-cache"),
        POETRY_VIRTUALENVS_IN_PROJECT="true",
        POETRY_NO_INTERACTION="1",
        # keyring would look for a desktop secret store (and may wait for one)
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        PDM_HOME=str(home / "pdm"),
        PDM_CACHE_DIR=str(home / "pdm-cache"),
        PDM_CHECK_UPDATE="false",
        PDM_NON_INTERACTIVE="1",
        PDM_IGNORE_ACTIVE_VENV="1",
        PIPENV_VENV_IN_PROJECT="1",
        PIPENV_IGNORE_VIRTUALENVS="1",
        PIPENV_CACHE_DIR=str(home / "pipenv-cache"),
        PIPENV_NOSPIN="1",
        PIPENV_YES="1",
        PIPENV_VERBOSITY="-1",
    )
    if trust is not None:
        env.update(SSL_CERT_FILE=str(trust), REQUESTS_CA_BUNDLE=str(trust), PIP_CERT=str(trust))
    env.update(extra)
    return env


@dataclass
class Locked:
    """A project and its lock file, made by `tool`."""

    tool: str
    project: Path
    lock: Path

    def lock_bytes(self) -> bytes:
        return self.lock.read_bytes()


def _pyproject(name: str, tail: str = "") -> str:
    return (
        f'[project]\nname = "{name}"\nversion = "0.1.0"\nrequires-python = ">=3.8"\n'
        f'dependencies = ["{REQUIREMENT}"]\n' + tail
    )


async def _checked(args: Sequence[str], env: dict, cwd: Path) -> CompletedRun:
    return (await run(["env", "-C", str(cwd), *map(str, args)], env, timeout=300)).assert_ok()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_uv_project(project: Path, index_url: str) -> None:
    """A uv project whose default index, in pyproject.toml, is `index_url`."""
    index = f'\n[[tool.uv.index]]\nname = "upstream"\nurl = "{index_url}"\ndefault = true\n'
    _write(project / "pyproject.toml", _pyproject("locked-uv", index))


def write_poetry_project(project: Path, index_url: str) -> None:
    """A poetry project (no package of its own) whose primary source is `index_url`."""
    tail = (
        "\n[tool.poetry]\npackage-mode = false\n"
        f'\n[[tool.poetry.source]]\nname = "upstream"\nurl = "{index_url}"\npriority = "primary"\n'
    )
    _write(project / "pyproject.toml", _pyproject("locked-poetry", tail))


def write_pdm_project(project: Path, index_url: str) -> None:
    """A pdm project (no package of its own) whose `pypi` source is `index_url`."""
    tail = (
        "\n[tool.pdm]\ndistribution = false\n"
        f'\n[[tool.pdm.source]]\nname = "pypi"\nurl = "{index_url}"\nverify_ssl = true\n'
    )
    _write(project / "pyproject.toml", _pyproject("locked-pdm", tail))


def write_pipfile(project: Path, index_url: str) -> None:
    """A Pipfile whose only source is `index_url`."""
    _write(
        project / "Pipfile",
        f'[[source]]\nname = "upstream"\nurl = "{index_url}"\nverify_ssl = true\n\n'
        f'[packages]\ntinyalpha = "{REQUIREMENT.removeprefix("tinyalpha")}"\n',
    )


async def lock_uv(project: Path, index_url: str, env: dict) -> Locked:
    """uv.lock, with the upstream as the project's default index in pyproject.toml."""
    write_uv_project(project, index_url)
    await _checked([find_uv_bin(), "lock", "--python", PYTHON], env, project)
    return Locked("uv", project, project / "uv.lock")


async def lock_pylock(project: Path, index_url: str, env: dict) -> Locked:
    """A PEP 751 pylock.toml exported from a uv.lock (both stay in the project)."""
    await lock_uv(project, index_url, env)
    args = [find_uv_bin(), "export", "--frozen", "--format", "pylock.toml", "-o", "pylock.toml"]
    await _checked(args, env, project)
    return Locked("pylock", project, project / "pylock.toml")


async def lock_poetry(project: Path, index_url: str, env: dict) -> Locked:
    """poetry.lock, with the upstream as the project's primary source."""
    write_poetry_project(project, index_url)
    await _checked([client("poetry", "poetry"), "lock"], env, project)
    return Locked("poetry", project, project / "poetry.lock")


async def lock_pdm(project: Path, index_url: str, env: dict) -> Locked:
    """pdm.lock with the files' URLs in it (--static-urls), the upstream replacing pypi."""
    write_pdm_project(project, index_url)
    pdm = client("pdm", "pdm")
    await _checked([pdm, "use", "-f", "--ignore-remembered", PYTHON], env, project)
    await _checked([pdm, "lock", "--static-urls"], env, project)
    return Locked("pdm", project, project / "pdm.lock")


async def lock_pipenv(project: Path, index_url: str, env: dict) -> Locked:
    """Pipfile.lock, the upstream as the Pipfile's only source."""
    write_pipfile(project, index_url)
    await _checked([client("pipenv", "pipenv"), "lock", "--python", PYTHON], env, project)
    return Locked("pipenv", project, project / "Pipfile.lock")


LOCKERS = {
    "uv": lock_uv,
    "pylock": lock_pylock,
    "poetry": lock_poetry,
    "pdm": lock_pdm,
    "pipenv": lock_pipenv,
}


async def lock_or_skip(tool: str, project: Path, index_url: str, env: dict) -> Locked:
    """The project locked by tool against index_url; the test skips when tool is missing."""
    try:
        return await LOCKERS[tool](project, index_url, env)
    except ClientMissing as exc:
        pytest.skip(str(exc))


# The wheels every lock of these tests names: tinyalpha 2.0 and the dependency it brings.
LOCKED_WHEELS = ("tinyalpha-1.0-py3-none-any.whl", "tinyalpha-2.0-py3-none-any.whl",
                 "beta_helper-1.0-py3-none-any.whl")  # fmt: skip


def small_index(wheelhouse: Mapping[str, Path]) -> UpstreamIndex:
    """An upstream index of LOCKED_WHEELS, from the session's wheelhouse."""
    index = UpstreamIndex()
    for name in LOCKED_WHEELS:
        index.add_wheel(wheelhouse[name], requires_python=">=3.8" if "2.0" in name else None)
    return index


def installed(site_packages: Path) -> list[str]:
    """name-version of every distribution installed there (their .dist-info directories)."""
    return sorted(p.name.removesuffix(".dist-info") for p in site_packages.glob("*.dist-info"))


def venv_site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    assert found, f"no site-packages in {venv}"
    return found[0]


def _deps(site_packages: Path) -> list[str]:
    """What was installed, without the installers a new venv starts with."""
    tools = ("pip-", "setuptools-", "wheel-", "_virtualenv")
    return [name for name in installed(site_packages) if not name.startswith(tools)]


async def install_uv_sync(locked: Locked, env: dict, *flags: str) -> list[str]:
    """`uv sync` with `flags` (--locked, --frozen) into the project's .venv."""
    args = [find_uv_bin(), "sync", "--python", PYTHON, "--no-install-project", *flags]
    await _checked(args, env, locked.project)
    return _deps(venv_site_packages(locked.project / ".venv"))


async def install_uv_pylock(locked: Locked, env: dict) -> list[str]:
    """`uv pip install -r pylock.toml` into a new venv."""
    venv = locked.project / "uv-pylock-venv"
    await _checked([find_uv_bin(), "venv", "--python", PYTHON, venv], env, locked.project)
    args = [find_uv_bin(), "pip", "install", "--python", venv / "bin" / "python", "-r",
            locked.lock]  # fmt: skip
    await _checked(args, env, locked.project)
    return _deps(venv_site_packages(venv))


async def install_pip_pylock(locked: Locked, env: dict) -> list[str]:
    """`pip install -r pylock.toml` (a pip that reads PEP 751 locks) into a target directory."""
    target = locked.project / "pip-pylock-target"
    pip = client("pip-new", "python")
    args = [pip, "-m", "pip", "install", "--no-cache-dir", "--target", target, "-r", locked.lock]
    await _checked(args, env, locked.project)
    return _deps(target)


async def install_poetry(locked: Locked, env: dict) -> list[str]:
    await _checked([client("poetry", "poetry"), "env", "use", PYTHON], env, locked.project)
    await _checked([client("poetry", "poetry"), "install", "--no-root"], env, locked.project)
    return _deps(venv_site_packages(locked.project / ".venv"))


async def install_pdm(locked: Locked, env: dict) -> list[str]:
    # The project's own .venv from PYTHON (pdm use makes it), whatever .pdm-python said before.
    pdm = client("pdm", "pdm")
    await _checked([pdm, "use", "-f", "--ignore-remembered", PYTHON], env, locked.project)
    await _checked([pdm, "install", "--frozen-lockfile"], env, locked.project)
    return _deps(venv_site_packages(locked.project / ".venv"))


async def install_pipenv(locked: Locked, env: dict) -> list[str]:
    await _checked([client("pipenv", "pipenv"), "sync", "--python", PYTHON], env, locked.project)
    return _deps(venv_site_packages(locked.project / ".venv"))


# Each lock install the transparent face is for: (name, the lock it reads, how it is run).
INSTALLS = {
    "uv sync --locked": ("uv", lambda locked, env: install_uv_sync(locked, env, "--locked")),
    "uv sync --frozen": ("uv", lambda locked, env: install_uv_sync(locked, env, "--frozen")),
    "uv pip install -r pylock.toml": ("pylock", install_uv_pylock),
    "pip install -r pylock.toml": ("pylock", install_pip_pylock),
    "poetry install": ("poetry", install_poetry),
    "pdm install": ("pdm", install_pdm),
    "pipenv sync": ("pipenv", install_pipenv),
}

"""poetry, pdm, pip-tools and the oldest supported pip, each a real process installing through
the proxy. They are installed by tests/clients/install-clients (CI runs it); a missing one is
skipped with that reason."""

import os
import sys
from pathlib import Path

import pytest

from tests.fakes.clients import clean_env, run

CLIENTS = Path(os.environ.get("CACHEPROXY_CLIENTS_DIR", Path(__file__).parent.parent / ".clients"))
WHEELS = ("tinyalpha-2.0-py3-none-any.whl", "beta_helper-1.0-py3-none-any.whl")


def client(name: str, executable: str) -> str:
    path = CLIENTS / name / "bin" / executable
    if not path.exists():
        pytest.skip(f"{name} is not installed: run tests/clients/install-clients")
    return str(path)


def isolated_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in clean_env().items() if not k.startswith(("POETRY_", "PDM_", "VIRTUAL_ENV"))
    }
    env.update(
        HOME=str(tmp_path / "home"),  # no user config of any client
        XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
        XDG_CACHE_HOME=str(tmp_path / "home" / ".cache"),
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
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


def assert_each_wheel_fetched_once(upstream):
    for wheel in WHEELS:
        assert upstream.index.file_hits(wheel) <= 1, wheel


async def importable(python: Path, env) -> None:
    result = await run(
        [str(python), "-c", "import tinyalpha, beta_helper; print(tinyalpha.__version__)"], env
    )
    result.assert_ok()
    assert result.stdout.strip() == "2.0"


@pytest.mark.parametrize("mode", ["json", "html"])
async def test_oldest_supported_pip(proxy, upstream, tmp_path, mode):
    upstream.index.mode = mode
    pip = client("pip-old", "pip")
    env = isolated_env(tmp_path)
    target = tmp_path / "target"
    result = await run(
        [pip, "install", "--no-cache-dir", "--target", str(target), "--index-url", proxy.url,
         "tinyalpha==2.0"],
        env,
    )  # fmt: skip
    result.assert_ok()
    assert (target / "beta_helper" / "__init__.py").exists()
    assert_each_wheel_fetched_once(upstream)


async def test_pip_compile(proxy, upstream, tmp_path):
    compile_ = client("pip-tools", "pip-compile")
    env = isolated_env(tmp_path)
    (tmp_path / "requirements.in").write_text("tinyalpha\n")
    result = await run(
        [compile_, "--quiet", "--no-header", "--no-annotate", "--index-url", proxy.url,
         "--cache-dir", str(tmp_path / "pipcache"), "--output-file", "-",
         str(tmp_path / "requirements.in")],
        env,
    )  # fmt: skip
    result.assert_ok()
    pins = sorted(line for line in result.stdout.splitlines() if "==" in line)
    assert pins == ["beta-helper==1.0", "tinyalpha==2.0"]


async def test_poetry_lock_and_install(proxy, upstream, tmp_path):
    poetry = client("poetry", "poetry")
    root = project(
        tmp_path,
        "[tool.poetry]\npackage-mode = false\n\n"
        f'[[tool.poetry.source]]\nname = "cacheproxy"\nurl = "{proxy.url}"\n'
        'priority = "primary"\n',
    )
    env = isolated_env(tmp_path)
    env.update(
        POETRY_CACHE_DIR=str(tmp_path / "poetry-cache"),
        POETRY_VIRTUALENVS_IN_PROJECT="true",
        POETRY_NO_INTERACTION="1",
    )
    for command in (["lock"], ["install", "--no-root"]):
        (await run([poetry, "--directory", str(root), *command], env)).assert_ok()
    lock = (root / "poetry.lock").read_text()
    assert lock.count(f'url = "{proxy.url.rstrip("/")}"') == 2  # the proxy is the source
    await importable(root / ".venv" / "bin" / "python", env)
    assert_each_wheel_fetched_once(upstream)


async def test_pdm_lock_and_install(proxy, upstream, tmp_path):
    pdm = client("pdm", "pdm")
    root = project(
        tmp_path,
        "[tool.pdm]\ndistribution = false\n\n"
        # A source named "pypi" replaces the default index: nothing else is consulted.
        f'[[tool.pdm.source]]\nname = "pypi"\nurl = "{proxy.url}"\n',
    )
    env = isolated_env(tmp_path)
    env.update(PDM_CACHE_DIR=str(tmp_path / "pdm-cache"), PDM_CHECK_UPDATE="false")
    # A venv of the project's own: pointed at the test runner's, pdm would install into it.
    (
        await run([sys.executable, "-m", "venv", "--without-pip", str(root / ".venv")], env)
    ).assert_ok()
    venv_python = str(root / ".venv" / "bin" / "python")
    for command in (["use", "-f", venv_python], ["lock"], ["install", "--no-self"]):
        (await run([pdm, command[0], "-p", str(root), *command[1:]], env)).assert_ok()
    lock = (root / "pdm.lock").read_text()
    wheel = upstream.index.files["tinyalpha-2.0-py3-none-any.whl"]
    assert f'hash = "sha256:{wheel.sha256}"' in lock  # hashes served by the proxy were locked
    await importable(root / ".venv" / "bin" / "python", env)
    assert_each_wheel_fetched_once(upstream)

"""uv beyond `pip install`: compile, lock + sync (the lock records proxy URLs), exclude-newer."""

import shutil
import sys

from uv import find_uv_bin

from tests.fakes.clients import clean_env, run


async def uv(*args, cwd=None, cache=None, index=None):
    env = clean_env()
    if index is not None:
        # Project commands must read pyproject's [tool.uv], which UV_NO_CONFIG would hide; the
        # default index is pinned to the proxy so nothing can fall back to another index.
        del env["UV_NO_CONFIG"]
        env["UV_DEFAULT_INDEX"] = index
    env["UV_CACHE_DIR"] = str(cache)
    env["UV_PYTHON"] = sys.executable
    env["UV_PYTHON_DOWNLOADS"] = "never"
    command = [find_uv_bin(), *args]
    if cwd is not None:
        command[1:1] = ["--directory", str(cwd)]
    return await run(command, env)


async def test_pip_compile_pins_through_the_proxy(proxy, tmp_path):
    (tmp_path / "requirements.in").write_text("tinyalpha\n")
    result = await uv(
        "pip", "compile", str(tmp_path / "requirements.in"), "--index-url", proxy.url,
        "--no-header", cache=tmp_path / "cache",
    )  # fmt: skip
    result.assert_ok()
    pins = [line for line in result.stdout.splitlines() if "==" in line]
    assert pins == ["beta-helper==1.0", "tinyalpha==2.0"]


async def test_lock_records_proxy_urls_and_frozen_sync_needs_only_the_proxy(
    make_proxy, upstream, tmp_path
):
    proxy = await make_proxy()
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        "[project]\n"
        'name = "app"\nversion = "0.1"\nrequires-python = ">=3.10"\n'
        'dependencies = ["tinyalpha"]\n\n'
        "[[tool.uv.index]]\n"
        f'url = "{proxy.url}"\ndefault = true\n'
    )
    (await uv("lock", cwd=project, cache=tmp_path / "c1", index=proxy.url)).assert_ok()
    lock = (project / "uv.lock").read_text()
    assert f'url = "{proxy.url}tinyalpha/tinyalpha-2.0-py3-none-any.whl"' in lock
    assert f"{proxy.url}beta-helper/beta_helper-1.0-py3-none-any.whl" in lock
    (await uv("sync", "--frozen", cwd=project, cache=tmp_path / "c2", index=proxy.url)).assert_ok()

    # A new checkout syncs from the lock with the upstream gone: the proxy alone serves it.
    await upstream.stop()
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".venv"))
    (await uv("sync", "--frozen", cwd=copy, cache=tmp_path / "c3", index=proxy.url)).assert_ok()
    assert list((copy / ".venv").rglob("tinyalpha/__init__.py"))


async def test_exclude_newer_uses_upload_time(proxy, tmp_path):
    for date, ok in (("2023-06-01T00:00:00Z", False), ("2025-01-01T00:00:00Z", True)):
        result = await uv(
            "pip", "install", "--target", str(tmp_path / date[:4]), "--index-url", proxy.url,
            "--exclude-newer", date, "tinyalpha", cache=tmp_path / "cache",
        )  # fmt: skip
        assert (result.returncode == 0) is ok, result.stderr

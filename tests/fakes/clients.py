"""Run real pip and uv processes against an index URL, isolated from this machine's config."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from uv import find_uv_bin


@dataclass
class CompletedRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def assert_ok(self) -> CompletedRun:
        assert self.returncode == 0, (
            f"{' '.join(self.args)} exited {self.returncode}\n{self.stdout}\n{self.stderr}"
        )
        return self


def clean_env() -> dict[str, str]:
    """The environment without the machine's own index settings, which would bypass the proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    # The machine's trust settings too: requests lets REQUESTS_CA_BUNDLE beat pip's --cert.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        env.pop(name, None)
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["UV_NO_CONFIG"] = "1"
    return env


async def run(args: list[str], env: dict[str, str], timeout: float = 180) -> CompletedRun:
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        stdout, stderr = await proc.communicate()
        return CompletedRun(args, -9, stdout.decode(), stderr.decode() + "\n(timed out)")
    return CompletedRun(args, proc.returncode or 0, stdout.decode(), stderr.decode())


async def pip_install(
    index_url: str,
    target: Path,
    *requirements: str,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> CompletedRun:
    args = [
        sys.executable, "-m", "pip", "install", "--no-cache-dir", "--target", str(target),
        "--index-url", index_url, *extra_args, *requirements,
    ]  # fmt: skip
    return await run(args, {**clean_env(), **(env or {})})


async def uv_pip_install(
    index_url: str,
    target: Path,
    *requirements: str,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> CompletedRun:
    env = {**clean_env(), **(env or {})}
    with tempfile.TemporaryDirectory() as uv_cache:
        env["UV_CACHE_DIR"] = uv_cache
        args = [
            find_uv_bin(), "pip", "install", "--no-cache", "--target", str(target),
            "--python", sys.executable, "--index-url", index_url, *extra_args, *requirements,
        ]  # fmt: skip
        return await run(args, env)

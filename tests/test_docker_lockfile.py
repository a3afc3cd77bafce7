"""A Docker build of a uv project with `uv sync --locked` through the transparent face, as
docs/lockfiles.md says to run it (opt-in: -m docker; the engine and base image come from
../shared/docker).

The lock is made directly against the fake upstream served over HTTPS on 127.0.0.2, the way
one made on a laptop names the public index. A real `cacheproxy serve` (its upstream that
fake upstream) answers the build's CONNECTs; the build gets nothing but the recipe's flags
(`--build-arg HTTPS_PROXY=...`, the CA bundle as a BuildKit secret) and the recipe's one
changed RUN line. Built twice with nothing in the builder's cache: the second build's files
all come from the proxy's cache, and the image keeps no trace of the proxy.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests import test_deploy
from tests.fakes.clients import clean_env
from tests.fakes.https_upstream import https_upstream
from tests.fakes.lockfiles import client_env, lock_uv
from tests.fakes.process import ProxyProcess
from tests.fakes.upstream import UpstreamIndex
from tests.test_deploy import BASE_IMAGE, run

pytestmark = pytest.mark.docker
# The session's engine, started by ../shared/docker/start-dockerd (a fixture).
docker_env = test_deploy.docker_env

REPO = Path(__file__).resolve().parent.parent
LOCKFILES_DOC = REPO / "docs" / "lockfiles.md"
WHEELS = ("tinyalpha-2.0-py3-none-any.whl", "beta_helper-1.0-py3-none-any.whl")
IMAGE = "cacheproxy-lockfile-test"
# BuildKit is what reads `RUN --mount=type=secret`; this engine's own CLI speaks it
# (../shared/docker/README.md: the other CLI on this machine has no buildx).
DOCKER = "/usr/bin/docker"


def documented_dockerfile() -> str:
    """The Dockerfile of docs/lockfiles.md, with the two lines that need an image registry
    made local (../shared/docker/README.md): the base image is the machine's own, which has
    uv already."""
    text = LOCKFILES_DOC.read_text()
    section = text.split("## Docker builds", 1)[1]
    dockerfile = re.search(r"```dockerfile\n(.*?)```", section, re.S)
    assert dockerfile is not None, "docs/lockfiles.md has no Dockerfile in its Docker section"
    lines = []
    for line in dockerfile.group(1).splitlines():
        if line.startswith("FROM "):
            line = f"FROM {BASE_IMAGE}"
        elif line.startswith("COPY --from="):
            continue  # uv's own image: the base image has uv
        lines.append(line)
    return "\n".join(lines) + "\n"


def documented_build_flags() -> list[str]:
    """The flags of the recipe's `docker build` line, in docs/lockfiles.md."""
    section = LOCKFILES_DOC.read_text().split("## Docker builds", 1)[1]
    command = re.search(r"```bash\n(.*?)```", section, re.S)
    assert command is not None
    joined = command.group(1).replace("\\\n", " ")
    build = next(line for line in joined.splitlines() if "docker build" in line)
    return build.split("docker build", 1)[1].split()


def docker(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    return run(DOCKER, *args, env=env, check=check)


async def build(context: Path, flags: list[str], env: dict[str, str]) -> str:
    """docker build with an empty builder cache (--no-cache: every step runs again, and no
    cache mount keeps anything); returns its output."""
    buildkit = dict(env, DOCKER_BUILDKIT="1")
    args = ["build", "--no-cache", "--progress=plain", *flags, "-t", IMAGE, str(context)]
    result = await asyncio.to_thread(docker, *args, env=buildkit)
    return result.stdout + result.stderr


def upstream_pulls(upstream) -> dict[str, int]:
    return {
        "requests": sum(upstream.index.requests.values()),
        "file requests": upstream.file_requests(),
        "bytes": sum(upstream.index.bytes_sent.values()),
    }


def served(proxy: ProxyProcess, filename: str) -> list[str]:
    """The proxy's access-log outcomes of GETs of that file (hit, miss, ...)."""
    found = []
    for line in proxy.log:
        match = re.search(r"access: GET (\S+) 200 (\S+) ", line)
        if match and match[1].endswith("/" + filename):
            found.append(match[2])
    return found


async def test_uv_sync_locked_in_docker_build_goes_through_the_cache_and_leaves_no_trace(
    docker_env, wheelhouse, tmp_path
):
    index = UpstreamIndex()
    for name in WHEELS:
        index.add_wheel(wheelhouse[name], requires_python=">=3.8" if "2.0" in name else None)
    async with https_upstream(index, tmp_path / "upstream") as upstream:
        project = tmp_path / "project"
        home = tmp_path / "home"
        locked = await lock_uv(project, upstream.simple_url, client_env(home, upstream.ca_file))
        lock = locked.lock_bytes()
        assert upstream.origin.encode() in lock
        dockerfile = documented_dockerfile()
        # No ARG, no ENV, no proxy: only the lock install's RUN mounts the CA and names it.
        assert not re.search(r"^(ARG|ENV) |proxy_", dockerfile, re.M | re.I), dockerfile
        (project / "Dockerfile").write_text(dockerfile)
        (project / ".dockerignore").write_text(".venv\n")

        # The proxy trusts the fake upstream's CA, as a proxy in front of a private mirror
        # under an internal CA would.
        cache = tmp_path / "cache"
        proxy = await asyncio.to_thread(
            ProxyProcess, cache, upstream.simple_url, env={"SSL_CERT_FILE": str(upstream.ca_file)}
        )
        try:
            port = proxy.url.split(":")[2].split("/")[0]
            # What `eval "$(cacheproxy env --transparent)"` gives, as JSON.
            settings = dict(
                clean_env(),
                CACHEPROXY_CACHE_DIR=str(cache),
                CACHEPROXY_UPSTREAM=upstream.simple_url,
                CACHEPROXY_PORT=port,
            )
            printed = await asyncio.to_thread(
                subprocess.run,
                [str(REPO / ".venv" / "bin" / "python"), "-m", "cacheproxy", "env",
                 "--transparent", "--format", "json"],
                env=settings, capture_output=True, text=True, check=True,
            )  # fmt: skip
            transparent = json.loads(printed.stdout)
            bundle = transparent["ca_bundle"]
            flags = transparent["docker_build"]["network-host"]["flags"]
            assert flags == [
                "--network=host",
                "--build-arg", f"HTTPS_PROXY=http://127.0.0.1:{port}",
                "--secret", f"id=cacheproxy-ca,src={bundle}",
            ]  # fmt: skip
            # The doc's command line is the same, with the variables `env` sets.
            documented = [
                flag.replace('"$SSL_CERT_FILE"', bundle).replace("3145", port)
                for flag in documented_build_flags()
                if flag != "."
            ]
            assert documented == flags

            upstream.index.reset_counts()
            first_log = await build(project, flags, docker_env)
            first = upstream_pulls(upstream)
            upstream.index.reset_counts()
            second_log = await build(project, flags, docker_env)
            second = upstream_pulls(upstream)
        finally:
            proxy.stop()
        print(f"first build: {first}; second build: {second}")
        # The first build's files came through the proxy (the build reaches no other way
        # out), the second's from its cache: nothing more from the upstream.
        wheel_bytes = sum(wheelhouse[name].stat().st_size for name in WHEELS)
        assert first["file requests"] >= len(WHEELS) and first["bytes"] >= wheel_bytes, first
        assert second == {"requests": 0, "file requests": 0, "bytes": 0}, second_log
        for log in (first_log, second_log):
            assert "Installed 2 packages" in log or "+ tinyalpha==2.0" in log, log
        # Both builds went through the proxy: a miss, then a hit, for every file.
        for name in WHEELS:
            assert served(proxy, name) == ["miss", "hit"], "".join(proxy.log)
        assert locked.lock_bytes() == lock

    # The image: the packages are in it, the proxy is not.
    try:
        listing = docker(
            "run", "--rm", IMAGE, "sh", "-c", "ls /app/.venv/lib/python3*/site-packages",
            env=docker_env,
        ).stdout  # fmt: skip
        assert "tinyalpha-2.0.dist-info" in listing and "beta_helper-1.0.dist-info" in listing
        inspected = json.loads(docker("image", "inspect", IMAGE, env=docker_env).stdout)[0]
        environment = inspected["Config"]["Env"] or []
        history = docker(
            "history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE, env=docker_env
        ).stdout
        inside = docker(
            "run", "--rm", IMAGE, "sh", "-c",
            "env; ls /etc/ssl/certs | grep -i cacheproxy; "
            "find / -xdev -name '*cacheproxy*' 2>/dev/null; true",
            env=docker_env,
        ).stdout  # fmt: skip
        print("Env:", environment)
        print("history:", history)
        print("inside:", inside)
        proxy_variable = re.compile(r"\b(https?|all|no)_proxy\b", re.I)
        for text in ("\n".join(environment), history, inside):
            assert not proxy_variable.search(text), text
            assert f"127.0.0.1:{port}" not in text and "BEGIN CERTIFICATE" not in text, text
        # The history shows the Dockerfile's lines (the RUN names the secret it mounted); the
        # container's file system and environment nothing at all.
        assert "cacheproxy" not in inside.lower() and "cacheproxy" not in str(environment).lower()
    finally:
        docker("image", "rm", "-f", IMAGE, env=docker_env, check=False)

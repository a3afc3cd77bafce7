"""The ways users run the proxy: the systemd unit, the container image and the compose sidecar.

The image and compose tests need a Docker engine (opt-in: -m docker). They start one with the
scripts in ../shared/docker, and build the image's own dependencies through a proxy on the host
in front of the configured upstream, so they need that index too.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from cacheproxy.config import default_upstream
from tests.fakes.clients import uv_pip_install
from tests.fakes.process import ProxyProcess

REPO = Path(__file__).resolve().parent.parent
DOCKER_SCRIPTS = REPO.parent / "shared" / "docker"
BASE_IMAGE = "local/python:bookworm"
IMAGE = "cacheproxy:test"


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        message = "systemd-analyze is not installed (apt-get install systemd)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: a skip there would hide a broken unit
        pytest.skip(message)
    return found


def verify_unit(
    unit_text: str, tmp_path: Path, socket_text: str | None = None
) -> subprocess.CompletedProcess:
    # verify checks that ExecStart exists, so the copy starts this checkout's cacheproxy; the
    # rest of the unit is verified as shipped.
    executable = shutil.which("cacheproxy") or str(REPO / ".venv" / "bin" / "cacheproxy")
    unit = tmp_path / "cacheproxy.service"
    unit.write_text(
        unit_text.replace("ExecStart=/opt/cacheproxy/bin/cacheproxy", f"ExecStart={executable}")
    )
    units = [unit]
    if socket_text is not None:
        units.insert(0, tmp_path / "cacheproxy.socket")
        units[0].write_text(socket_text)
    return subprocess.run(
        [_systemd_analyze(), "verify", *map(str, units)], capture_output=True, text=True
    )


def test_systemd_unit_verifies_without_a_warning(tmp_path):
    text = (REPO / "systemd" / "cacheproxy.service").read_text()
    assert "ExecStart=/opt/cacheproxy/bin/cacheproxy serve" in text
    result = verify_unit(text, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_systemd_verify_would_catch_a_broken_unit(tmp_path):
    text = (REPO / "systemd" / "cacheproxy.service").read_text()
    misspelled = verify_unit(text.replace("ProtectSystem=", "ProtectSytem="), tmp_path)
    assert "Unknown key" in misspelled.stderr
    missing = verify_unit(
        text.replace("/opt/cacheproxy/bin/cacheproxy", "/nonexistent/x"), tmp_path
    )
    assert missing.returncode != 0


def test_systemd_socket_unit_verifies_with_its_service(tmp_path):
    from cacheproxy.config import Config

    service = (REPO / "systemd" / "cacheproxy.service").read_text()
    socket_text = (REPO / "systemd" / "cacheproxy.socket").read_text()
    assert f"ListenStream=127.0.0.1:{Config().port}\n" in socket_text
    result = verify_unit(service, tmp_path, socket_text)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""
    broken = verify_unit(service, tmp_path, socket_text.replace("Backlog=", "Backlgo="))
    assert "Unknown key" in broken.stderr


def test_environment_file_names_only_real_settings():
    from cacheproxy.config import SETTINGS, env_name

    known = {env_name(name) for name in SETTINGS}
    lines = (REPO / "systemd" / "cacheproxy.env").read_text().splitlines()
    named = {line.lstrip("#").split("=", 1)[0] for line in lines if "=" in line and " " not in line}
    assert named and named <= known


# -- Docker ------------------------------------------------------------------------------------


def run(*args: str, env: dict[str, str], check: bool = True, timeout: float = 900, cwd=None):
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def docker_env() -> dict[str, str]:
    started = subprocess.run(
        [DOCKER_SCRIPTS / "start-dockerd"], capture_output=True, text=True, check=True
    )
    env = dict(os.environ, DOCKER_HOST=started.stdout.strip().split("=", 1)[1])
    subprocess.run([DOCKER_SCRIPTS / "make-base-image", BASE_IMAGE], env=env, check=True)
    return env


@pytest.fixture(scope="session")
def build_index(tmp_path_factory):
    """A proxy on the host for the image builds: containers here reach no index directly."""
    proxy = ProxyProcess(tmp_path_factory.mktemp("build-cache"), default_upstream())
    yield proxy.url
    proxy.stop()


@pytest.fixture(scope="session")
def image(docker_env, build_index) -> str:
    run(
        "docker", "build", "--network=host", "--build-arg", f"BASE={BASE_IMAGE}",
        "--build-arg", f"PIP_INDEX_URL={build_index}", "-t", IMAGE, str(REPO),
        env=docker_env,
    )  # fmt: skip
    return IMAGE


async def wait_healthy(container: str, env: dict[str, str], timeout: float = 90) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        result = await asyncio.to_thread(
            run, "docker", "inspect", "-f", "{{json .State.Health}}", container, env=env
        )
        health = json.loads(result.stdout)
        if health and health["Status"] == "healthy":
            return time.monotonic() - started
        await asyncio.sleep(1)
    raise AssertionError(f"{container} did not turn healthy: {health}")


@pytest.mark.docker
async def test_image_runs_as_non_root_turns_healthy_and_keeps_its_cache_in_the_volume(
    image, docker_env, upstream, tmp_path
):
    port = free_port()
    volume = f"cacheproxy-test-{port}"
    base = ["docker", "run", "-d", "--network=host", "-v", f"{volume}:/var/cache/cacheproxy"]
    settings = ["-e", f"CACHEPROXY_PORT={port}", "-e", f"CACHEPROXY_UPSTREAM={upstream.simple_url}"]
    index_url = f"http://127.0.0.1:{port}/simple/"
    containers = []
    try:
        first = run(*base, *settings, image, env=docker_env).stdout.strip()
        containers.append(first)
        await wait_healthy(first, docker_env)
        assert run("docker", "exec", first, "id", "-u", env=docker_env).stdout.strip() == "10001"
        (await uv_pip_install(index_url, tmp_path / "a", "tinyalpha==2.0")).assert_ok()
        assert upstream.index.file_hits("tinyalpha-2.0-py3-none-any.whl") == 1

        # docker stop sends SIGTERM: the proxy exits cleanly, well before the 10 s kill.
        stopping = time.monotonic()
        run("docker", "stop", first, env=docker_env)
        assert time.monotonic() - stopping < 8
        code = run("docker", "inspect", "-f", "{{.State.ExitCode}}", first, env=docker_env)
        assert code.stdout.strip() == "0"

        # A new container on the same volume serves the cache with the upstream gone.
        await upstream.stop()
        second = run(*base, *settings, image, env=docker_env).stdout.strip()
        containers.append(second)
        await wait_healthy(second, docker_env)
        (await uv_pip_install(index_url, tmp_path / "b", "tinyalpha==2.0")).assert_ok()
        assert (tmp_path / "b" / "tinyalpha-2.0.dist-info").is_dir()
    finally:
        run("docker", "rm", "-f", *containers, env=docker_env, check=False)
        run("docker", "volume", "rm", "-f", volume, env=docker_env, check=False)


@pytest.mark.docker
async def test_compose_builds_the_example_app_through_the_sidecar(
    image, docker_env, build_index, upstream, tmp_path
):
    project = tmp_path / "project"
    shutil.copytree(REPO / "examples", project / "examples")
    shutil.copytree(REPO / "cacheproxy", project / "cacheproxy")
    for name in ("docker-compose.yml", "Dockerfile", ".dockerignore", "pyproject.toml"):
        shutil.copy(REPO / name, project)
    shutil.copy(REPO / "README.md", project)
    # The sidecar proxies the local test upstream, so the app asks for a wheel it has.
    (project / "examples" / "compose-app" / "requirements.txt").write_text("tinyalpha\n")
    port = free_port()
    env = dict(
        docker_env,
        BASE=BASE_IMAGE,
        CACHEPROXY_PORT=str(port),
        CACHEPROXY_UPSTREAM=upstream.simple_url,
        CACHEPROXY_BUILD_INDEX_URL=build_index,
        COMPOSE_PROJECT_NAME=f"cpt{port}",
    )
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
    try:
        # As docs/deployment.md says: the sidecar first, then the app's build through it.
        run(compose, "up", "-d", "--build", "cacheproxy", env=env, cwd=project)
        container = run(compose, "ps", "-q", "cacheproxy", env=env, cwd=project).stdout.strip()
        await wait_healthy(container, env)
        result = await asyncio.to_thread(run, compose, "up", "--build", "app", env=env, cwd=project)
        assert "tinyalpha 2.0 installed through cacheproxy" in result.stdout
        assert upstream.index.file_hits("tinyalpha-2.0-py3-none-any.whl") == 1
        logs = run(compose, "logs", "cacheproxy", env=env, cwd=project).stdout
        assert "tinyalpha-2.0-py3-none-any.whl" in logs  # the app's build went through it
    finally:
        run(compose, "down", "-v", env=env, cwd=project, check=False)
        run("docker", "rmi", "compose-app:local", "cacheproxy:local", env=env, check=False)

"""cacheproxy env: the settings it prints parse, and real pip and uv install with them alone."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from uv import find_uv_bin

from cacheproxy.cli.clientenv import index_url
from cacheproxy.cli.main import main
from cacheproxy.errors import ClientEnvError
from tests.fakes.clients import clean_env, run


def env_command(*args: str, environ: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["env", *args], env=environ or {})


def test_the_index_url_from_the_listening_address():
    assert index_url("0.0.0.0", 3145) == "http://127.0.0.1:3145/simple/"
    assert index_url("::", 8080, index="corp") == "http://127.0.0.1:8080/index/corp/simple/"
    assert (
        index_url("", 0, url="https://cache.lan/pypi/simple/") == "https://cache.lan/pypi/simple/"
    )
    assert index_url("", 0, url="http://cache.lan:3145", index="corp") == (
        "http://cache.lan:3145/index/corp/simple/"
    )
    with pytest.raises(ClientEnvError):
        index_url("", 0, url="cache.lan:3145")


def test_shell_lines_are_valid_and_set_every_tool(tmp_path):
    result = env_command(environ={"CACHEPROXY_PORT": "4100", "CACHEPROXY_HOST": "0.0.0.0"})
    assert result.exit_code == 0, result.output
    script = tmp_path / "env.sh"
    script.write_text(result.output)
    subprocess.run(["bash", "-n", str(script)], check=True)
    shown = subprocess.run(
        ["bash", "-c", f'source {script} && echo "$PIP_INDEX_URL $UV_DEFAULT_INDEX $PDM_PYPI_URL"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.split()
    assert shown == ["http://127.0.0.1:4100/simple/"] * 3
    assert "export PIPENV_PYPI_MIRROR=http://127.0.0.1:4100/simple/" in result.output
    assert "poetry source add --priority=primary cacheproxy" in result.output
    assert "# hatch" in result.output
    assert "docker build --network=host --build-arg PIP_INDEX_URL=http://127.0.0.1:4100" in (
        result.output
    )
    gateway = "--add-host=host.docker.internal:host-gateway"
    assert gateway in result.output
    assert "PIP_TRUSTED_HOST=host.docker.internal" in result.output
    assert "UV_INSECURE_HOST=host.docker.internal" in result.output


def test_dotenv_lines_are_key_value():
    result = env_command("--format", "dotenv", "--url", "http://cache.lan:3145/simple/")
    assert result.exit_code == 0, result.output
    pairs = {}
    for line in result.output.splitlines():
        if line.startswith("#"):
            continue
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*=\S+", line), line
        key, value = line.split("=", 1)
        pairs[key] = value
    assert pairs["PIP_INDEX_URL"] == "http://cache.lan:3145/simple/"
    # plain HTTP to a host that is not this one: pip and uv must be told to use it
    assert pairs["PIP_TRUSTED_HOST"] == pairs["UV_INSECURE_HOST"] == "cache.lan"


def test_json_for_a_named_index_from_the_config_file(tmp_path):
    config = tmp_path / "cacheproxy.toml"
    config.write_text('port = 4200\n[indexes]\ncorp = "http://corp.lan/simple/"\n')
    result = env_command("--format", "json", "--index", "corp", "--config", str(config))
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    url = "http://127.0.0.1:4200/index/corp/simple/"
    assert document["index_url"] == url
    assert document["tools"]["uv"]["env"] == {"UV_DEFAULT_INDEX": url, "UV_INDEX_URL": url}
    assert set(document["tools"]) == {"pip", "uv", "poetry", "pdm", "pipenv", "hatch"}
    flags = document["docker_build"]["network-host"]["flags"]
    assert flags[:3] == ["--network=host", "--build-arg", f"PIP_INDEX_URL={url}"]


def test_an_unknown_index_or_a_bad_url_is_one_line_exit_2(tmp_path):
    unknown = env_command("--index", "corp")
    assert unknown.exit_code == 2 and "no index named 'corp'" in unknown.output
    bad = env_command("--url", "cache.lan")
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1


async def test_check_asks_the_running_proxy(proxy):
    up = await asyncio.to_thread(env_command, "--check", "--url", proxy.url)
    assert up.exit_code == 0, up.output
    await proxy.close()
    down = await asyncio.to_thread(env_command, "--check", "--url", proxy.url)
    assert down.exit_code == 1 and "no proxy answers" in down.output


@pytest.mark.parametrize("client", ["pip", "uv"])
async def test_a_real_install_with_only_the_printed_lines(client, proxy, upstream, tmp_path):
    printed = env_command("--url", proxy.url)
    assert printed.exit_code == 0, printed.output
    script = tmp_path / "env.sh"
    script.write_text(printed.output)
    target = tmp_path / "target"
    # No index on the command line: the index comes from the sourced lines alone.
    if client == "pip":
        install = f"{sys.executable} -m pip install --no-cache-dir --target {target} tinyalpha"
    else:
        install = (
            f"{find_uv_bin()} pip install --no-cache --python {sys.executable}"
            f" --target {target} tinyalpha"
        )
    result = await run(["bash", "-c", f"source {script} && exec {install}"], clean_env())
    result.assert_ok()
    assert sorted(p.name for p in target.glob("*.dist-info")) == [
        "beta_helper-1.0.dist-info",
        "tinyalpha-2.0.dist-info",
    ]
    assert upstream.index.file_hits("tinyalpha-2.0-py3-none-any.whl") == 1


def test_poetry_gets_no_variable_it_ignores():
    result = env_command("--url", "http://127.0.0.1:3145/")
    assert result.exit_code == 0, result.output
    # poetry installs ignore POETRY_REPOSITORIES_*_URL: what works is named instead.
    assert "POETRY_REPOSITORIES" not in result.output.replace("POETRY_REPOSITORIES_*_URL", "")
    assert 'eval "$(cacheproxy env --transparent)" && poetry install' in result.output
    document = json.loads(env_command("--format", "json").output)
    assert document["tools"]["poetry"]["env"] == {}


def transparent(tmp_path, *args: str, **environ: str):
    return env_command(
        "--transparent", *args, environ={"CACHEPROXY_CACHE_DIR": str(tmp_path / "cache"), **environ}
    )


def sourced(tmp_path, output: str, *names: str) -> list[str]:
    script = tmp_path / "env.sh"
    script.write_text(output)
    subprocess.run(["bash", "-n", str(script)], check=True)
    echo = " ".join(f'"${name}"' for name in names)
    return subprocess.run(
        ["bash", "-c", f"source {script} && printf '%s\\n' {echo}"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.splitlines()


def test_transparent_lines_send_clients_through_the_proxy_and_trust_its_ca(tmp_path):
    result = transparent(tmp_path, CACHEPROXY_PORT="4100", CACHEPROXY_HOST="0.0.0.0")
    assert result.exit_code == 0, result.output
    names = ["HTTPS_PROXY", "https_proxy", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"]
    values = sourced(tmp_path, result.stdout, *names, "NO_PROXY", "no_proxy")
    assert values[:2] == ["http://127.0.0.1:4100"] * 2
    bundle = tmp_path / "cache" / "ca" / "bundle.pem"
    assert values[2:5] == [str(bundle)] * 3
    # The bundle is this cache's CA (the one `serve` and `cacheproxy ca` open) after the
    # system's, so the tunnelled hosts' real certificates still verify.
    shown = CliRunner().invoke(
        main, ["ca", "--fingerprint", "--cache-dir", str(tmp_path / "cache")]
    )
    fingerprint = shown.output.strip()
    text = bundle.read_text()
    assert f"# SHA-256 {fingerprint}" in text and text.count("BEGIN CERTIFICATE") > 1
    assert f"CA SHA-256 {fingerprint}" in result.stdout
    # Loopback stays direct (the proxy refuses hosts it does not answer for).
    assert values[5] == values[6] == "localhost,127.0.0.1,::1"
    assert "uv sync --locked" in result.stdout
    assert "--secret id=cacheproxy-ca,src=" + str(bundle) in result.stdout
    assert "--build-arg HTTPS_PROXY=http://127.0.0.1:4100" in result.stdout
    # A second run keeps the CA clients already trust.
    again = transparent(tmp_path, CACHEPROXY_PORT="4100")
    assert again.exit_code == 0 and "made" not in again.output
    assert f"CA SHA-256 {fingerprint}" in again.stdout


def test_transparent_puts_the_token_into_the_proxy_url(tmp_path):
    configured = transparent(tmp_path, "--format", "json", CACHEPROXY_AUTH_TOKENS="tok-12345678")
    assert configured.exit_code == 0, configured.output
    document = json.loads(configured.stdout)
    assert document["env"]["HTTPS_PROXY"] == "http://cacheproxy:tok-12345678@127.0.0.1:3145"
    assert document["env"]["https_proxy"] == document["env"]["HTTPS_PROXY"]
    given = transparent(
        tmp_path, "--format", "dotenv", "--url", "http://ci:t0ken-abc@cache.lan:3145/simple/"
    )
    assert given.exit_code == 0, given.output
    pairs = dict(
        line.split("=", 1) for line in given.stdout.splitlines() if not line.startswith("#")
    )
    assert pairs["HTTPS_PROXY"] == "http://ci:t0ken-abc@cache.lan:3145"
    assert pairs["NO_PROXY"] == "localhost,127.0.0.1,::1,cache.lan"
    assert pairs["PIP_CERT"] == str(tmp_path / "cache" / "ca" / "bundle.pem")
    # The index face's URL carries a configured token the same way.
    plain = env_command("--format", "json", environ={"CACHEPROXY_AUTH_TOKENS": "tok-12345678"})
    assert json.loads(plain.output)["index_url"] == (
        "http://cacheproxy:tok-12345678@127.0.0.1:3145/simple/"
    )


def test_a_package_host_on_loopback_is_not_left_direct(tmp_path):
    result = transparent(tmp_path, "--format", "json", "--intercept-host", "127.0.0.1:8443")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert "127.0.0.1" in document["package_hosts"]
    assert document["env"]["NO_PROXY"] == "localhost,::1"


def test_transparent_says_when_the_settings_turn_the_face_off(tmp_path):
    result = transparent(tmp_path, CACHEPROXY_TRANSPARENT="false")
    assert result.exit_code == 0
    assert "the transparent face is off" in result.stderr

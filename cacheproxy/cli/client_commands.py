"""The `doctor` and `env` commands: help for the Dockerfiles and clients that use the proxy."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import click
from yarl import URL

from cacheproxy.cli.clientenv import (
    RENDERERS,
    TRANSPARENT_RENDERERS,
    client_env,
    index_url,
    proxy_url,
    transparent_env,
    with_token,
)
from cacheproxy.cli.doctor.diagnose import diagnose
from cacheproxy.cli.doctor.dockerfile import DoctorExtraMissing, parse_dockerfile
from cacheproxy.cli.options import repeatable
from cacheproxy.config import Config, env_name, load_config
from cacheproxy.errors import CaError, ClientEnvError, ConfigError
from cacheproxy.http.trust import ca_hosts, open_authority, write_bundle

EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    click.echo(f"cacheproxy: error: {message}", err=True)
    sys.exit(code)


@click.command()
@click.argument("dockerfile", default="Dockerfile", metavar="[DOCKERFILE]")
@click.option("--json", "as_json", is_flag=True, help="A JSON list: rule, lines, message, fix.")
def doctor(dockerfile: str, as_json: bool) -> None:
    """Name what makes a Dockerfile's Python builds slow, with the lines that fix it.

    Exit code 0: nothing found; 1: findings; 2: the file cannot be read."""
    path = Path(dockerfile)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
    try:
        parsed = parse_dockerfile(text)
    except DoctorExtraMissing as exc:
        _fail(str(exc))
    if not parsed.stages:
        _fail(f"{path} has no FROM line: not a Dockerfile")
    findings = diagnose(parsed)
    if as_json:
        click.echo(json.dumps([finding.as_dict() for finding in findings], indent=2))
    else:
        for finding in findings:
            lines = ", ".join(str(n) for n in finding.lines)
            click.echo(f"{path}:{finding.lines[0]}: {finding.rule} (line {lines})")
            click.echo(f"  {finding.message}")
            click.echo("  fix:")
            click.echo("".join(f"    {line}\n" for line in finding.fix.splitlines()))
        count = len(findings)
        click.echo(f"{count} finding{'s' * (count != 1)} in {path}" if count else f"{path}: ok")
    sys.exit(EXIT_FINDINGS if findings else 0)


def _setting(name: str, help_text: str = ""):
    flag = "--" + name.replace("_", "-")
    return click.option(
        flag, name, default=None, metavar="VALUE", help=f"{help_text} [env: {env_name(name)}]"
    )


@click.command()
@click.option(
    "--url", default=None, metavar="URL", help="The proxy's address, if not the configured one."
)
@click.option(
    "--index",
    "index_name",
    default=None,
    metavar="NAME",
    help="A named index (/index/NAME/simple/).",
)
@click.option(
    "--transparent",
    is_flag=True,
    help="Print HTTPS_PROXY and the CA bundle instead: lockfile installs (uv sync, pylock.toml, "
    "poetry, pdm, pipenv) go through the proxy's transparent face (docs/lockfiles.md). Writes "
    "the bundle beside the cache: run it with serve's settings.",
)
@click.option(
    "--format", "output_format", type=click.Choice(sorted(RENDERERS)), default="shell",
    show_default=True, help="export lines, KEY=VALUE lines, or JSON.",
)  # fmt: skip
@click.option("--check", is_flag=True, help="Ask the proxy's /health first; exit 1 if it is down.")
@_setting("host")
@_setting("port")
@_setting("indexes")
@_setting("cache_dir", "The cache whose CA the bundle holds (--transparent).")
@_setting("upstream", "serve's upstream: its hosts are the CA's (--transparent).")
@repeatable("intercept_host", "HOST[:PORT]", "serve's --intercept-host (--transparent).")
@_setting("ca_cert", "serve's own CA certificate, if it has one (--transparent).")
@_setting("ca_key", "serve's own CA key, if it has one (--transparent).")
@_setting("auth_tokens", "Client tokens; the first is put into the URLs.")
@_setting("auth_tokens_file", "File with client tokens; the first is put into the URLs.")
@click.option("--config", "config_file", default=None, metavar="FILE", help="TOML settings file.")
def env(
    url: str | None,
    index_name: str | None,
    transparent: bool,
    output_format: str,
    check: bool,
    config_file: str | None,
    **flags: str | None,
) -> None:
    """Print what pip, uv, poetry, pdm, pipenv, hatch and docker build need to use the proxy.

    The address is --url, else the one `serve` would listen on (same flags, environment and
    config file). With --transparent: what makes lockfile installs go through it."""
    config: Config | None = None
    try:
        if url is None or transparent:
            config = load_config(flags, os.environ, Path(config_file) if config_file else None)
        if url is None:
            assert config is not None
            if index_name is not None:
                config.index_named(index_name)
            scheme = "https" if config.tls_cert else "http"  # serve --tls-cert
            chosen = index_url(config.host, config.port, index=index_name, scheme=scheme)
            chosen = with_token(chosen, _first_token(config))
        else:
            chosen = index_url("", 0, url=url, index=index_name)
    except (ConfigError, ClientEnvError) as exc:
        _fail(str(exc))
    if check:
        _check_health(chosen)
    if transparent:
        assert config is not None
        click.echo(TRANSPARENT_RENDERERS[output_format](_transparent(config, chosen)), nl=False)
        return
    click.echo(RENDERERS[output_format](client_env(chosen)), nl=False)


def _first_token(config: Config) -> str | None:
    tokens = sorted(config.client_tokens())
    return tokens[0] if tokens else None


def _transparent(config: Config, chosen: str):
    """Open the CA serve uses (made if there is none yet) and write the bundle clients trust."""
    if not config.transparent:
        click.echo(
            "cacheproxy: warning: the transparent face is off in these settings "
            "(--no-transparent): the proxy refuses CONNECTs",
            err=True,
        )
    try:
        authority = open_authority(config)
        bundle = write_bundle(config, authority)
    except (CaError, ValueError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write the CA bundle: {exc.strerror or exc}")
    if authority.created and authority.previous_fingerprint:
        click.echo(
            f"cacheproxy: made a new CA at {authority.cert_path} (the old one did not cover "
            "these settings' package hosts): a serve already running still uses the old one; "
            "restart it, and give env the same settings as serve",
            err=True,
        )
    elif authority.created:
        click.echo(f"cacheproxy: made a CA at {authority.cert_path}", err=True)
    return transparent_env(proxy_url("", 0, url=chosen), bundle, authority.fingerprint,
                           ca_hosts(config))  # fmt: skip


def _check_health(url: str) -> None:
    root = url.split("/index/")[0] + "/" if "/index/" in url else url[: -len("simple/")]
    health = str(URL(root + "health").with_user(None).with_password(None))
    try:
        with urllib.request.urlopen(health, timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        _fail(f"no proxy answers at {health}: {getattr(exc, 'reason', exc)}", EXIT_FINDINGS)
    click.echo(f"cacheproxy: {health} answers", err=True)

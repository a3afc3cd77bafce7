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

from cacheproxy.cli.clientenv import RENDERERS, client_env, index_url
from cacheproxy.cli.doctor.diagnose import diagnose
from cacheproxy.cli.doctor.dockerfile import DoctorExtraMissing, parse_dockerfile
from cacheproxy.config import env_name, load_config
from cacheproxy.errors import ClientEnvError, ConfigError

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
    "--format", "output_format", type=click.Choice(sorted(RENDERERS)), default="shell",
    show_default=True, help="export lines, KEY=VALUE lines, or JSON.",
)  # fmt: skip
@click.option("--check", is_flag=True, help="Ask the proxy's /health first; exit 1 if it is down.")
@click.option("--host", default=None, metavar="VALUE", help=f"[env: {env_name('host')}]")
@click.option("--port", default=None, metavar="VALUE", help=f"[env: {env_name('port')}]")
@click.option("--indexes", default=None, metavar="VALUE", help=f"[env: {env_name('indexes')}]")
@click.option("--config", "config_file", default=None, metavar="FILE", help="TOML settings file.")
def env(
    url: str | None,
    index_name: str | None,
    output_format: str,
    check: bool,
    config_file: str | None,
    **flags: str | None,
) -> None:
    """Print what pip, uv, poetry, pdm, pipenv, hatch and docker build need to use the proxy.

    The address is --url, else the one `serve` would listen on (same flags, environment and
    config file)."""
    try:
        if url is None:
            config = load_config(flags, os.environ, Path(config_file) if config_file else None)
            if index_name is not None:
                config.index_named(index_name)
            scheme = "https" if config.tls_cert else "http"  # serve --tls-cert
            chosen = index_url(config.host, config.port, index=index_name, scheme=scheme)
        else:
            chosen = index_url("", 0, url=url, index=index_name)
    except (ConfigError, ClientEnvError) as exc:
        _fail(str(exc))
    if check:
        _check_health(chosen)
    click.echo(RENDERERS[output_format](client_env(chosen)), nl=False)


def _check_health(url: str) -> None:
    root = url.split("/index/")[0] + "/" if "/index/" in url else url[: -len("simple/")]
    health = str(URL(root + "health").with_user(None).with_password(None))
    try:
        with urllib.request.urlopen(health, timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        _fail(f"no proxy answers at {health}: {getattr(exc, 'reason', exc)}", EXIT_FINDINGS)
    click.echo(f"cacheproxy: {health} answers", err=True)

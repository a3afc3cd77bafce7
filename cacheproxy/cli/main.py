"""The command line: parse flags, build the Config, hand over to the server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from cacheproxy import __version__
from cacheproxy.cli.ca_commands import ca
from cacheproxy.cli.cache_commands import prune, purge, stats, verify
from cacheproxy.cli.client_commands import doctor, env
from cacheproxy.cli.clientenv import index_url as index_url_for
from cacheproxy.cli.options import (
    CONFIG_OPTION,
    fail,
    load_settings,
    repeatable,
    setting,
)
from cacheproxy.cli.preflight import check_cache_dir, tls_context
from cacheproxy.cli.shared_commands import (
    all_shared_settings,
)
from cacheproxy.cli.warm import read_wants, resolve_with_pip
from cacheproxy.cli.warm import warm as run_warm
from cacheproxy.config import env_name
from cacheproxy.errors import ActivationError, ConfigError, SharedCacheError, WarmError
from cacheproxy.http.activation import inherited_sockets
from cacheproxy.http.server import serve as run_server
from cacheproxy.http.status import human_bytes
from cacheproxy.ops import runtime
from cacheproxy.ops.logs import configure_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cacheproxy")
def main() -> None:
    """cacheproxy: a caching proxy for Python package indexes (pip, uv, poetry, pdm)."""


@main.command()
@setting("host", "Address to listen on (default 127.0.0.1; 0.0.0.0 for containers).")
@setting("port", "Port to listen on (default 3145; 0 picks a free one).")
@setting("cache_dir", "Where pages and files are stored (default: the user cache dir).")
@setting("upstream", "The simple index to proxy (default: the public Python package index).")
@setting("page_ttl", "How long a project page is fresh, e.g. 10m (default 10m).")
@setting("negative_ttl", "How long 'no such project' is remembered (default 5m).")
@setting("max_size", "Cache size limit; least recently used goes first (default 20GiB).")
@setting(
    "memory_budget",
    "Memory for the parsed and rendered page caches together, e.g. 64MiB (default 32MiB).",
)
@setting("connect_timeout", "Upstream connect timeout, e.g. 10s (default 10s).")
@setting("read_timeout", "Upstream read timeout between bytes (default 60s).")
@setting("page_timeout", "Deadline for a whole upstream page fetch, body included (default 30s).")
@setting(
    "min_rate",
    "Slowest average upstream file transfer, e.g. 10KiB/s; slower ones fail (default 10KiB/s; "
    "0 for none).",
)
@setting("min_rate_window", "The span min-rate is averaged over; also its grace (default 30s).")
@setting(
    "retries",
    "Upstream retries on connection errors, timeouts, 429 and 5xx, with backoff (default 2).",
)
@setting(
    "idle_timeout",
    "Close a client connection idle this long, or one still sending its request (default 15s).",
)
@click.option(
    "--offline/--online",
    "offline",
    default=None,  # not given: the environment and the file still count
    help="Serve only what is cached, never contact the upstream; --online undoes an offline "
    f"setting from the environment or file (default online) [env: {env_name('offline')}]",
)
@click.option(
    "--lookahead/--no-lookahead",
    "lookahead",
    default=None,  # not given: the environment and the file still count
    help="Fetch ahead what a resolver will ask for next (the likely wheel's metadata, its "
    f"dependencies' pages) when the upstream serves no metadata (default on) "
    f"[env: {env_name('lookahead')}]",
)
@setting("log_level", "debug, info, warning or error (default info).")
@setting("log_format", "text, or json for one JSON object per line (default text).")
@setting(
    "auth_tokens",
    "Comma-separated tokens clients must send, as the Basic-auth password or a Bearer token.",
)
@setting("auth_tokens_file", "File with one client token per line.")
@setting(
    "indexes",
    "More upstreams, each served apart under /index/NAME/simple/: NAME=URL[,NAME=URL...].",
)
@setting(
    "public_url",
    "The URL clients reach the proxy at, shown on the status page (default: the Host header).",
)
@click.option(
    "--file-hosts",
    "file_hosts",
    multiple=True,
    metavar="PATTERN",
    # Not given: None, so the environment and the file still count.
    callback=lambda _ctx, _param, values: list(values) or None,
    help="Hosts files may come from besides the upstream's, like *.example.org; repeatable "
    f"or comma-separated (default: any host a page names) [env: {env_name('file_hosts')}]",
)
@setting(
    "json_api_url",
    "The upstream's JSON API for /pypi/PROJECT/json (default: .../pypi/ beside .../simple/; "
    "off for none).",
)
@setting(
    "shared_cache",
    "An S3 bucket the nodes of a fleet share, s3://BUCKET[/PREFIX]; endpoint, region and keys "
    "from the AWS_* variables.",
)
@click.option(
    "--transparent/--no-transparent",
    "transparent",
    default=None,  # not given: the environment and the file still count
    help="Answer HTTPS_PROXY CONNECTs to the package hosts from the cache, under the proxy's "
    "own CA, so lockfile installs go through it (default on; docs/lockfiles.md) "
    f"[env: {env_name('transparent')}]",
)
@repeatable(
    "intercept_host",
    "HOST[:PORT]",
    "A package host the transparent face answers for besides the upstreams' (port 443 unless "
    "given); repeatable or comma-separated.",
)
@repeatable(
    "tunnel",
    "HOST[:PORT]",
    "A host whose CONNECTs are passed through untouched (git, tool downloads); others are "
    "refused; repeatable or comma-separated.",
)
@setting("ca_cert", "An organisation's own CA certificate (PEM) for the transparent face.")
@setting("ca_key", "The private key of --ca-cert (PEM, readable by its owner only).")
@setting("tls_cert", "Serve HTTPS with this PEM certificate chain; reloaded on SIGHUP.")
@setting("tls_key", "The private key of --tls-cert (PEM).")
@setting(
    "min_release_age",
    "Release cooldown: files uploaded more recently than this, like 7d or 36h, are hidden "
    "(default 0: none).",
)
@repeatable(
    "release_age_exempt",
    "PROJECT",
    "A project the cooldown does not hold back; repeatable or comma-separated.",
)
@setting(
    "exclude_newer",
    "Snapshot: hide files uploaded at or after this RFC 3339 time or date (a date counts whole).",
)
@repeatable(
    "deny",
    "SPEC",
    "A requirement the proxy refuses: a project (evilpkg) or versions (requests>=2.99); "
    "repeatable, ';'-separated in the environment.",
)
@repeatable(
    "allow",
    "SPEC",
    "With any, only these projects (and versions, if a specifier is given) are served; "
    "repeatable, ';'-separated in the environment.",
)
@setting(
    "unknown_upload_time",
    "hide or show: files of unknown upload time while a cooldown or snapshot is on (default hide).",
)
@click.option(
    "--config",
    "config_file",
    default=None,
    metavar="FILE",
    help=f"TOML file with any of these settings [env: {env_name('config')}]",
)
def serve(config_file: str | None, **flags: str | None) -> None:
    """Run the proxy."""
    config = load_settings(flags, config_file)
    try:
        config.client_tokens()
        check_cache_dir(config.cache_dir)
        tls = tls_context(config)
        all_shared_settings(config)
    except (ConfigError, SharedCacheError) as exc:
        fail(str(exc))
    try:
        inherited = inherited_sockets()
    except ActivationError as exc:
        fail(f"socket activation: {exc}")
    configure_logging(config.log_level, config.log_format)
    runtime.limit_arenas()  # before any worker thread allocates
    runtime.fix_thresholds()
    runtime.trace_memory_from_env()  # only when asked to, for benchmark runs
    try:
        asyncio.run(run_server(config, inherited, tls))
    except OSError as exc:
        fail(f"cannot serve on {config.host}:{config.port}: {exc.strerror or exc}")
    except ConfigError as exc:  # wrong bucket or rejected keys, a CA that cannot be used
        fail(str(exc))
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option(
    "--index-url",
    default=None,
    metavar="URL",
    help="The running proxy's index (default: http://HOST:PORT/simple/ from the settings).",
)
@setting("host", "Where the proxy listens, to build the default --index-url.")
@setting("port", "The proxy's port, to build the default --index-url.")
@setting("auth_tokens", "Client tokens; the first is sent to the proxy.")
@setting("auth_tokens_file", "File with client tokens; the first is sent to the proxy.")
@CONFIG_OPTION
def warm(
    files: tuple[str, ...], index_url: str | None, config_file: str | None, **flags: str | None
) -> None:
    """Fetch through a running proxy everything a uv.lock, pylock.toml or requirements file
    needs, so the cache has it before the first build."""
    config = load_settings(flags, config_file)
    try:
        tokens = sorted(config.client_tokens())
    except ConfigError as exc:
        fail(str(exc))
    url = index_url or index_url_for(config.host, config.port)
    try:
        wants, unresolved = [], []
        for name in files:
            file_wants, file_unresolved = read_wants(Path(name))
            wants += file_wants
            unresolved += file_unresolved
        if unresolved:
            click.echo(f"resolving {len(unresolved)} unpinned requirements with pip", err=True)
            resolve_with_pip(unresolved, _with_token(url, tokens))
        report = asyncio.run(_warm_with_progress(wants, url, tokens[0] if tokens else None))
    except WarmError as exc:
        fail(str(exc))
    click.echo(
        f"{len(report.fetched)} files fetched, {len(report.already_cached)} already cached, "
        f"{human_bytes(report.bytes)} read through {url}"
    )
    for held in report.held_back:
        click.echo(f"held back by the proxy: {held}", err=True)
    for failure in report.failed:
        click.echo(f"failed: {failure}", err=True)
    if report.failed or report.held_back:
        sys.exit(1)


def _with_token(url: str, tokens: list[str]) -> str:
    return url.replace("://", f"://warm:{tokens[0]}@", 1) if tokens else url


async def _warm_with_progress(wants, url: str, token: str | None):
    bar = None

    def on_total(total: int) -> None:
        nonlocal bar
        bar = click.progressbar(length=total, label="warming", file=sys.stderr)
        bar.__enter__()

    def on_file() -> None:
        if bar is not None:
            bar.update(1)

    try:
        return await run_warm(wants, url, token, on_total=on_total, on_file=on_file)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


main.add_command(doctor)
main.add_command(env)
main.add_command(verify)
main.add_command(stats)
main.add_command(purge)
main.add_command(prune)
main.add_command(ca)

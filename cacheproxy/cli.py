"""The command line: parse flags, build the Config, hand over to the server."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click

from cacheproxy import __version__
from cacheproxy.config import Config, ConfigError, env_name, load_config, parse_size
from cacheproxy.doctor_cli import doctor, env
from cacheproxy.logs import configure_logging
from cacheproxy.preflight import check_cache_dir, tls_context
from cacheproxy.redact import redact_url
from cacheproxy.shared_commands import (
    all_shared_settings,
    shared_prune,
    shared_usage,
    shared_verify,
)
from cacheproxy.simple.names import InvalidName, normalize_project
from cacheproxy.store.local import Store
from cacheproxy.store.shared_body import SharedTierError
from cacheproxy.store.shared_settings import SharedCacheError
from cacheproxy.warm import WarmError, read_wants, resolve_with_pip
from cacheproxy.warm import warm as run_warm
from cacheproxy.web.activation import ActivationError, inherited_sockets
from cacheproxy.web.server import index_url as index_url_for
from cacheproxy.web.server import serve as run_server
from cacheproxy.web.status import human_bytes

EXIT_BAD_CONFIG = 2


def _fail(message: str) -> None:
    click.echo(f"cacheproxy: error: {redact_url(message)}", err=True)
    sys.exit(EXIT_BAD_CONFIG)


def _load(flags: dict[str, str | None], config_file: str | None) -> Config:
    try:
        return load_config(flags, os.environ, Path(config_file) if config_file else None)
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


def _repeatable(name: str, metavar: str, help_text: str):
    """A flag given once per value; not given, it is None so the environment and file count."""
    return click.option(
        "--" + name.replace("_", "-"),
        name,
        multiple=True,
        metavar=metavar,
        callback=lambda _ctx, _param, values: list(values) or None,
        help=f"{help_text} [env: {env_name(name)}]",
    )


def _setting(name: str, help_text: str):
    """A string option: the Config parser checks it, the same way as env and file values."""
    flag = "--" + name.replace("_", "-")
    return click.option(
        flag, name, default=None, metavar="VALUE", help=f"{help_text} [env: {env_name(name)}]"
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cacheproxy")
def main() -> None:
    """cacheproxy: a caching proxy for Python package indexes (pip, uv, poetry, pdm)."""


@main.command()
@_setting("host", "Address to listen on (default 127.0.0.1; 0.0.0.0 for containers).")
@_setting("port", "Port to listen on (default 3145; 0 picks a free one).")
@_setting("cache_dir", "Where pages and files are stored (default: the user cache dir).")
@_setting("upstream", "The simple index to proxy (default: the public Python package index).")
@_setting("page_ttl", "How long a project page is fresh, e.g. 10m (default 10m).")
@_setting("negative_ttl", "How long 'no such project' is remembered (default 5m).")
@_setting("max_size", "Cache size limit; least recently used goes first (default 20GiB).")
@_setting("connect_timeout", "Upstream connect timeout, e.g. 10s (default 10s).")
@_setting("read_timeout", "Upstream read timeout between bytes (default 60s).")
@_setting("page_timeout", "Deadline for a whole upstream page fetch, body included (default 30s).")
@_setting(
    "min_rate",
    "Slowest average upstream file transfer, e.g. 10KiB/s; slower ones fail (default 10KiB/s; "
    "0 for none).",
)
@_setting("min_rate_window", "The span min-rate is averaged over; also its grace (default 30s).")
@_setting(
    "retries",
    "Upstream retries on connection errors, timeouts, 429 and 5xx, with backoff (default 2).",
)
@_setting(
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
@_setting("log_level", "debug, info, warning or error (default info).")
@_setting("log_format", "text, or json for one JSON object per line (default text).")
@_setting(
    "auth_tokens",
    "Comma-separated tokens clients must send, as the Basic-auth password or a Bearer token.",
)
@_setting("auth_tokens_file", "File with one client token per line.")
@_setting(
    "indexes",
    "More upstreams, each served apart under /index/NAME/simple/: NAME=URL[,NAME=URL...].",
)
@_setting(
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
@_setting(
    "json_api_url",
    "The upstream's JSON API for /pypi/PROJECT/json (default: .../pypi/ beside .../simple/; "
    "off for none).",
)
@_setting(
    "shared_cache",
    "An S3 bucket the nodes of a fleet share, s3://BUCKET[/PREFIX]; endpoint, region and keys "
    "from the AWS_* variables.",
)
@_setting("tls_cert", "Serve HTTPS with this PEM certificate chain; reloaded on SIGHUP.")
@_setting("tls_key", "The private key of --tls-cert (PEM).")
@_setting(
    "min_release_age",
    "Release cooldown: files uploaded more recently than this, like 7d or 36h, are hidden "
    "(default 0: none).",
)
@_repeatable(
    "release_age_exempt",
    "PROJECT",
    "A project the cooldown does not hold back; repeatable or comma-separated.",
)
@_setting(
    "exclude_newer",
    "Snapshot: hide files uploaded at or after this RFC 3339 time or date (a date counts whole).",
)
@_repeatable(
    "deny",
    "SPEC",
    "A requirement the proxy refuses: a project (evilpkg) or versions (requests>=2.99); "
    "repeatable, ';'-separated in the environment.",
)
@_repeatable(
    "allow",
    "SPEC",
    "With any, only these projects (and versions, if a specifier is given) are served; "
    "repeatable, ';'-separated in the environment.",
)
@_setting(
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
    config = _load(flags, config_file)
    try:
        config.client_tokens()
        check_cache_dir(config.cache_dir)
        tls = tls_context(config)
        all_shared_settings(config)
    except (ConfigError, SharedCacheError) as exc:
        _fail(str(exc))
    try:
        inherited = inherited_sockets()
    except ActivationError as exc:
        _fail(f"socket activation: {exc}")
    configure_logging(config.log_level, config.log_format)
    try:
        asyncio.run(run_server(config, inherited, tls))
    except OSError as exc:
        _fail(f"cannot serve on {config.host}:{config.port}: {exc.strerror or exc}")
    except SharedCacheError as exc:  # wrong bucket or rejected keys, found at start
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


_CONFIG_OPTION = click.option(
    "--config", "config_file", default=None, metavar="FILE", help="TOML settings file."
)


_INDEX_OPTION = click.option(
    "--index",
    "index_name",
    default=None,
    metavar="NAME",
    help="Work on the cache of this named index (see serve --indexes) instead of the main one.",
)


def _index_config(flags: dict[str, str | None], config_file: str | None) -> Config:
    """The settings of the index the command works on (--index, or the main one)."""
    index_name = flags.pop("index_name", None)
    config = _load(flags, config_file)
    if index_name is not None:
        try:
            config = config.for_index(config.index_named(index_name))
        except ConfigError as exc:
            _fail(str(exc))
    return config


def _on_shared(work):
    """Run a shared-tier command; an unusable tier is one line and exit code 2."""
    try:
        return asyncio.run(work)
    except (SharedCacheError, SharedTierError) as exc:
        _fail(str(exc))


_SHARED_OPTION = click.option(
    "--shared", is_flag=True, help="Work on the shared object-store tier (--shared-cache)."
)


@contextlib.contextmanager
def _open_store(flags: dict[str, str | None], config_file: str | None) -> Iterator[Store]:
    """The store of a cache that a server may be using right now (diskcache is multi-process
    safe); its staging files are left alone."""
    config = _index_config(flags, config_file)
    if not (config.cache_dir / "store").is_dir():
        _fail(f"no cache at {config.cache_dir}")
    store = Store(config.cache_dir, config.max_size)
    store.open_sync(clean_staging=False)
    try:
        yield store
    finally:
        store.close_sync()


@main.command()
@_setting("cache_dir", "The cache to check.")
@_setting("indexes", "The named indexes, as for serve.")
@_setting("shared_cache", "The shared tier to check with --shared.")
@_SHARED_OPTION
@_INDEX_OPTION
@_CONFIG_OPTION
def verify(config_file: str | None, shared: bool, **flags: str | None) -> None:
    """Re-hash every cached file and remove those that do not match.

    Safe while the proxy runs: the store is shared through SQLite. With --shared, the shared
    tier's objects instead. Exit code 0: every file matched; 1: corrupt files were found (and
    removed); 2: no cache or bad settings."""
    if shared:
        report = _on_shared(shared_verify(_index_config(flags, config_file)))
        for sha256 in report.corrupt:
            click.echo(f"removed shared object {sha256}: its bytes do not match its name")
        click.echo(f"checked {report.checked} shared objects ({human_bytes(report.bytes)})")
        sys.exit(1 if report.corrupt else 0)
    flags.pop("shared_cache", None)
    with _open_store(flags, config_file) as store:
        report = store.verify_sync()
    for name in report.removed:
        click.echo(f"removed {name}: its bytes no longer match its sha256")
    click.echo(f"checked {report.checked} files, removed {len(report.removed)}")
    if report.removed:
        sys.exit(1)


@main.command()
@_setting("cache_dir", "The cache to describe.")
@_setting("indexes", "The named indexes, as for serve.")
@_setting("shared_cache", "The shared tier to describe as well.")
@_INDEX_OPTION
@_CONFIG_OPTION
def stats(config_file: str | None, **flags: str | None) -> None:
    """Size of the cache, its files and its biggest projects; and of the shared tier.

    The size counts everything stored (pages, extracted metadata, files); the project list
    counts only the bytes of each project's files, so it adds up to less."""
    config = _index_config(dict(flags), config_file)
    with _open_store(flags, config_file) as store:
        records = store.file_records()
        volume, entries = store.cache.volume(), len(store.cache)
    by_project: collections.Counter[str] = collections.Counter()
    for project, _, size, _ in records:
        by_project[project] += size
    click.echo(f"cache: {store.cache_dir}")
    files_size = sum(by_project.values())
    click.echo(f"size: {human_bytes(volume)} in {entries} entries (pages, metadata and files)")
    click.echo(f"files: {len(records)} wheels and sdists, {human_bytes(files_size)}")
    click.echo("biggest projects, by the size of their files (pages and metadata not counted):")
    for project, size in by_project.most_common(10):
        click.echo(f"  {project:<40} {human_bytes(size):>12}")
    if config.shared_cache is not None:
        where, objects, size = _on_shared(shared_usage(config))
        click.echo(f"shared: {where}: {human_bytes(size)} in {objects} files")


@main.command()
@click.argument("project")
@_setting("cache_dir", "The cache to purge from.")
@_setting("indexes", "The named indexes, as for serve.")
@_INDEX_OPTION
@_CONFIG_OPTION
def purge(project: str, config_file: str | None, **flags: str | None) -> None:
    """Remove a project's page and files from the cache."""
    try:
        name = normalize_project(project)
    except InvalidName as exc:
        _fail(str(exc))
    with _open_store(flags, config_file) as store:
        removed = store.purge_project(name)
    click.echo(f"removed {removed} entries of {name}")


@main.command()
@click.option("--max-size", "max_size", default=None, metavar="SIZE", help="e.g. 5GiB")
@click.option(
    "--older-than",
    "older_than",
    default=None,
    metavar="DAYS",
    type=str,
    help="remove files stored more than DAYS days ago",
)
@_setting("cache_dir", "The cache to prune.")
@_setting("indexes", "The named indexes, as for serve.")
@_setting("shared_cache", "The shared tier to prune with --shared.")
@_SHARED_OPTION
@_INDEX_OPTION
@_CONFIG_OPTION
def prune(
    max_size: str | None,
    older_than: str | None,
    config_file: str | None,
    shared: bool,
    **flags: str | None,
) -> None:
    """Shrink the cache: least recently used first down to SIZE, or files older than DAYS.

    With --shared, remove shared objects uploaded more than DAYS ago (by age only: the store
    knows nothing of reads), and multipart uploads abandoned that long ago."""
    if shared:
        if older_than is None or max_size is not None:
            _fail("the shared tier is pruned by age only: say --shared --older-than DAYS")
        try:
            days = float(older_than)
        except ValueError as exc:
            _fail(f"invalid value: {exc}")
        report = _on_shared(shared_prune(_index_config(flags, config_file), days * 86400))
        click.echo(
            f"removed {report.removed} shared objects ({human_bytes(report.bytes)}), "
            f"aborted {report.aborted_uploads} unfinished uploads"
        )
        return
    flags.pop("shared_cache", None)
    try:
        size = parse_size(max_size) if max_size is not None else None
        age = float(older_than) * 86400 if older_than is not None else None
    except ValueError as exc:
        _fail(f"invalid value: {exc}")
    if size is None and age is None:
        _fail("say --max-size SIZE or --older-than DAYS")
    with _open_store(flags, config_file) as store:
        removed = store.prune(size, age, time.time())
        volume = store.cache.volume()
    click.echo(f"removed {removed} entries; the cache now holds {human_bytes(volume)}")


@main.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option(
    "--index-url",
    default=None,
    metavar="URL",
    help="The running proxy's index (default: http://HOST:PORT/simple/ from the settings).",
)
@_setting("host", "Where the proxy listens, to build the default --index-url.")
@_setting("port", "The proxy's port, to build the default --index-url.")
@_setting("auth_tokens", "Client tokens; the first is sent to the proxy.")
@_setting("auth_tokens_file", "File with client tokens; the first is sent to the proxy.")
@_CONFIG_OPTION
def warm(
    files: tuple[str, ...], index_url: str | None, config_file: str | None, **flags: str | None
) -> None:
    """Fetch through a running proxy everything a uv.lock, pylock.toml or requirements file
    needs, so the cache has it before the first build."""
    config = _load(flags, config_file)
    try:
        tokens = sorted(config.client_tokens())
    except ConfigError as exc:
        _fail(str(exc))
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
        _fail(str(exc))
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

    try:
        return await run_warm(
            wants, url, token, on_total=on_total, on_file=lambda: bar and bar.update(1)
        )
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


main.add_command(doctor)
main.add_command(env)

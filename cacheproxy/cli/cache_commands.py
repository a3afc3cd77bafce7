"""The cache commands: verify, stats, purge and prune, safe beside a running server."""

from __future__ import annotations

import collections
import sys
import time

import click

from cacheproxy.cli.options import (
    CONFIG_OPTION,
    INDEX_OPTION,
    SHARED_OPTION,
    fail,
    index_config,
    on_shared,
    open_store,
    setting,
)
from cacheproxy.cli.shared_commands import (
    shared_prune,
    shared_usage,
    shared_verify,
)
from cacheproxy.config import parse_size
from cacheproxy.errors import InvalidName
from cacheproxy.http.status import human_bytes
from cacheproxy.protocol.names import normalize_project


@click.command()
@setting("cache_dir", "The cache to check.")
@setting("indexes", "The named indexes, as for serve.")
@setting("shared_cache", "The shared tier to check with --shared.")
@SHARED_OPTION
@INDEX_OPTION
@CONFIG_OPTION
def verify(config_file: str | None, shared: bool, **flags: str | None) -> None:
    """Re-hash every cached file and remove those that do not match.

    Safe while the proxy runs: the store is shared through SQLite. With --shared, the shared
    tier's objects instead. Exit code 0: every file matched; 1: corrupt files were found (and
    removed); 2: no cache or bad settings."""
    if shared:
        report = on_shared(shared_verify(index_config(flags, config_file)))
        for sha256 in report.corrupt:
            click.echo(f"removed shared object {sha256}: its bytes do not match its name")
        click.echo(f"checked {report.checked} shared objects ({human_bytes(report.bytes)})")
        sys.exit(1 if report.corrupt else 0)
    flags.pop("shared_cache", None)
    with open_store(flags, config_file) as store:
        report = store.verify_sync()
    for name in report.removed:
        click.echo(f"removed {name}: its bytes no longer match its sha256")
    click.echo(f"checked {report.checked} files, removed {len(report.removed)}")
    if report.removed:
        sys.exit(1)


@click.command()
@setting("cache_dir", "The cache to describe.")
@setting("indexes", "The named indexes, as for serve.")
@setting("shared_cache", "The shared tier to describe as well.")
@INDEX_OPTION
@CONFIG_OPTION
def stats(config_file: str | None, **flags: str | None) -> None:
    """Size of the cache, its files and its biggest projects; and of the shared tier.

    The size counts everything stored (pages, extracted metadata, files); the project list
    counts only the bytes of each project's files, so it adds up to less."""
    config = index_config(dict(flags), config_file)
    with open_store(flags, config_file) as store:
        records = store.file_records()
        volume, entries, _ = store.usage_sync()
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
        where, objects, size = on_shared(shared_usage(config))
        click.echo(f"shared: {where}: {human_bytes(size)} in {objects} files")


@click.command()
@click.argument("project")
@setting("cache_dir", "The cache to purge from.")
@setting("indexes", "The named indexes, as for serve.")
@INDEX_OPTION
@CONFIG_OPTION
def purge(project: str, config_file: str | None, **flags: str | None) -> None:
    """Remove a project's page and files from the cache."""
    try:
        name = normalize_project(project)
    except InvalidName as exc:
        fail(str(exc))
    with open_store(flags, config_file) as store:
        removed = store.purge_project(name)
    click.echo(f"removed {removed} entries of {name}")


@click.command()
@click.option("--max-size", "max_size", default=None, metavar="SIZE", help="e.g. 5GiB")
@click.option(
    "--older-than",
    "older_than",
    default=None,
    metavar="DAYS",
    type=str,
    help="remove files stored more than DAYS days ago",
)
@setting("cache_dir", "The cache to prune.")
@setting("indexes", "The named indexes, as for serve.")
@setting("shared_cache", "The shared tier to prune with --shared.")
@SHARED_OPTION
@INDEX_OPTION
@CONFIG_OPTION
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
            fail("the shared tier is pruned by age only: say --shared --older-than DAYS")
        try:
            days = float(older_than)
        except ValueError as exc:
            fail(f"invalid value: {exc}")
        report = on_shared(shared_prune(index_config(flags, config_file), days * 86400))
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
        fail(f"invalid value: {exc}")
    if size is None and age is None:
        fail("say --max-size SIZE or --older-than DAYS")
    with open_store(flags, config_file) as store:
        removed = store.prune(size, age, time.time())
        volume, _, _ = store.usage_sync()
    click.echo(f"removed {removed} entries; the cache now holds {human_bytes(volume)}")

"""The options and helpers every command shares: settings as flags, loading the config,
failing in one line, opening the store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import click

from cacheproxy.config import Config, env_name, load_config
from cacheproxy.errors import ConfigError, SharedCacheError, SharedTierError
from cacheproxy.ops.redact import redact_url
from cacheproxy.storage.local import Store

EXIT_BAD_CONFIG = 2


def fail(message: str) -> NoReturn:
    click.echo(f"cacheproxy: error: {redact_url(message)}", err=True)
    sys.exit(EXIT_BAD_CONFIG)


def load_settings(flags: dict[str, str | None], config_file: str | None) -> Config:
    try:
        return load_config(flags, os.environ, Path(config_file) if config_file else None)
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable: fail exits


def repeatable(name: str, metavar: str, help_text: str):
    """A flag given once per value; not given, it is None so the environment and file count."""
    return click.option(
        "--" + name.replace("_", "-"),
        name,
        multiple=True,
        metavar=metavar,
        callback=lambda _ctx, _param, values: list(values) or None,
        help=f"{help_text} [env: {env_name(name)}]",
    )


def setting(name: str, help_text: str):
    """A string option: the Config parser checks it, the same way as env and file values."""
    flag = "--" + name.replace("_", "-")
    return click.option(
        flag, name, default=None, metavar="VALUE", help=f"{help_text} [env: {env_name(name)}]"
    )


CONFIG_OPTION = click.option(
    "--config", "config_file", default=None, metavar="FILE", help="TOML settings file."
)


INDEX_OPTION = click.option(
    "--index",
    "index_name",
    default=None,
    metavar="NAME",
    help="Work on the cache of this named index (see serve --indexes) instead of the main one.",
)


def index_config(flags: dict[str, str | None], config_file: str | None) -> Config:
    """The settings of the index the command works on (--index, or the main one)."""
    index_name = flags.pop("index_name", None)
    config = load_settings(flags, config_file)
    if index_name is not None:
        try:
            config = config.for_index(config.index_named(index_name))
        except ConfigError as exc:
            fail(str(exc))
    return config


def on_shared(work):
    """Run a shared-tier command; an unusable tier is one line and exit code 2."""
    try:
        return asyncio.run(work)
    except (SharedCacheError, SharedTierError) as exc:
        fail(str(exc))


SHARED_OPTION = click.option(
    "--shared", is_flag=True, help="Work on the shared object-store tier (--shared-cache)."
)


@contextlib.contextmanager
def open_store(flags: dict[str, str | None], config_file: str | None) -> Iterator[Store]:
    """The store of a cache that a server may be using right now (diskcache is multi-process
    safe); its staging files are left alone."""
    config = index_config(flags, config_file)
    if not (config.cache_dir / "store").is_dir():
        fail(f"no cache at {config.cache_dir}")
    store = Store(config.cache_dir, config.max_size)
    store.open_sync(clean_staging=False)
    try:
        yield store
    finally:
        store.close_sync()

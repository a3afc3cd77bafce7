"""What serve checks before it binds, so a bad setting is named for what it is and not
reported as a failure to listen."""

from __future__ import annotations

import errno
import os
import ssl
import tempfile
from pathlib import Path

from cacheproxy.config import Config
from cacheproxy.errors import ConfigError, TlsError
from cacheproxy.http.tls import TlsFiles, server_context


def check_cache_dir(path: Path) -> None:
    """The cache directory exists or can be made, and a file can be written in it; raises
    ConfigError naming the path and what is wrong with it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        # mkdir and os.access can both say yes on a read-only mount: a real file says for sure.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"cache dir {path}: {_what_is_wrong(path, exc)}") from None


def _what_is_wrong(path: Path, exc: OSError) -> str:
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return f"{blocker} is a file, not a directory"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"not writable by this user (uid {os.getuid()})"
    if exc.errno == errno.EROFS:
        return "on a read-only file system"
    if exc.errno == errno.ENOENT:
        return "cannot be created here (its parent does not allow new directories)"
    return f"cannot be created or written: {exc.strerror or exc}"


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The HTTPS context from --tls-cert and --tls-key, or None for plain HTTP."""
    try:
        files = TlsFiles.from_settings(config.tls_cert, config.tls_key)
        return None if files is None else server_context(files)
    except TlsError as exc:
        raise ConfigError(f"tls: {exc}") from None

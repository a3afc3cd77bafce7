"""HTTPS serving: the server's SSL context, built at start and renewed in place on SIGHUP."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from cacheproxy.errors import TlsError

log = logging.getLogger("cacheproxy")


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    @classmethod
    def from_settings(cls, cert: Path | None, key: Path | None) -> TlsFiles | None:
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise TlsError("--tls-cert and --tls-key go together: give both or neither")
        return cls(cert, key)


def _readable(path: Path) -> None:
    # load_cert_chain's own OSError does not say which of the two files it was.
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise TlsError(f"cannot read {path}: {exc.strerror or exc}") from None


def _load(context: ssl.SSLContext, files: TlsFiles) -> None:
    _readable(files.cert)
    _readable(files.key)
    try:
        context.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(f"{files.key} is not the private key of {files.cert}") from None
        raise TlsError(
            f"{files.cert} and {files.key} are not a PEM certificate chain and its key "
            f"({exc.reason or 'unreadable'})"
        ) from None


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context holding the certificate chain and its key; raises TlsError."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load(context, files)
    return context


def reload_certificate(context: ssl.SSLContext, files: TlsFiles) -> bool:
    """Load the files again into the live context, so new connections get the renewed
    certificate. They are tried on a scratch context first: a failed load_cert_chain can leave
    a context with the new certificate and no key, so a bad renewal keeps the old pair."""
    try:
        server_context(files)
        _load(context, files)
    except TlsError as exc:
        log.error("certificate not reloaded, still serving the previous one: %s", exc)
        return False
    log.info("certificate reloaded from %s", files.cert)
    return True

"""The transparent face's CA as the configuration asks for it, and the bundle clients trust.

`serve` opens it at start-up (making it on first start), `cacheproxy ca` and `cacheproxy env
--transparent` open the same one: the hosts it vouches for are the configuration's package
hosts (`Config.package_hosts`), so every command agrees on one CA per cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cacheproxy.config import Config

if TYPE_CHECKING:  # cryptography (8 MiB) is loaded only when a CA is opened
    from cacheproxy.http.ca import CertificateAuthority

CA_DIR = "ca"
BUNDLE_FILE = "bundle.pem"


def ca_dir(config: Config) -> Path:
    """Where the CA of a cache lives: beside its store."""
    return config.cache_dir / CA_DIR


def bundle_path(config: Config) -> Path:
    """The file SSL_CERT_FILE, REQUESTS_CA_BUNDLE and PIP_CERT name: the system's CAs and
    this proxy's."""
    return ca_dir(config) / BUNDLE_FILE


def ca_hosts(config: Config) -> list[str]:
    """The names the CA vouches for: the package hosts, without their ports (a certificate
    names a host, whatever port it is reached on)."""
    return list(dict.fromkeys(host.host for host in config.package_hosts()))


def open_authority(config: Config, *, renew: bool = False) -> CertificateAuthority:
    """The CA the configuration names (--ca-cert/--ca-key) or this cache's own, made if it
    has none that covers the package hosts. Blocking: at start-up or in a thread. Raises
    CaError (files, hosts) or ValueError (a host no certificate can name)."""
    from cacheproxy.http.ca import CertificateAuthority

    hosts = ca_hosts(config)
    if config.ca_cert is not None or config.ca_key is not None:
        if config.ca_cert is None or config.ca_key is None:
            raise ValueError("--ca-cert and --ca-key go together")
        return CertificateAuthority.from_files(config.ca_cert, config.ca_key, hosts)
    return CertificateAuthority.open(ca_dir(config), hosts, renew=renew)


def write_bundle(config: Config, authority: CertificateAuthority) -> Path:
    """Write the trust bundle for this cache's clients; returns its path."""
    path = bundle_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    authority.bundle(path)
    return path

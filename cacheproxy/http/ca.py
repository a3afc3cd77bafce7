"""The certificate authority of the transparent HTTPS face: it vouches for the package hosts
only, and issues their leaf certificates on demand.

Where it lives: a directory beside the cache (the caller passes ``cache_dir / "ca"``) holding
``ca.pem`` (the certificate, public, mode 0644) and ``ca.key`` (its private key, mode 0600,
created with that mode and renamed into place, so it is never readable by others, not even for
a moment). An organisation's own CA comes in with ``CertificateAuthority.from_files``.

Name constraints: a CA made here carries a critical X.509 nameConstraints extension whose
permitted subtrees are the package hosts (a dNSName per host, an iPAddress /32 or /128 per
address), so a client verifying a chain refuses a certificate for any other name even when it
was signed with this key: a leaked key cannot vouch for a bank. Names of a kind no host uses are
shut out as well (every address is excluded when no host is an address; only the reserved
``invalid`` domain is permitted when every host is an address), since a permitted list of one
kind leaves the other kind unconstrained. X.509 cannot permit a DNS name without its
subdomains; the leaf issuer below still refuses any host outside the configured set.

When the set of hosts changes (see ``open``): the hosts a CA vouches for are read back from its
own certificate. If every configured host is still covered, the CA is kept, so clients keep
trusting it; hosts taken out of the set get no more leaf certificates (issuance checks the
configured set), and ``cacheproxy ca init --renew`` makes a narrower CA when the wider one should
go. If a configured host is not covered, no client would accept a leaf for it, so a new CA is
made: the old certificate is kept as ``ca.pem.old``, its key is deleted (nothing may sign with a
retired CA), and a warning names both fingerprints. Clients must then trust the new
certificate: ``cacheproxy env --transparent`` writes a bundle with the current one.

Why ECDSA P-256 for the CA and the leaves: a key is made in well under a millisecond where an
RSA-2048 key takes tens of milliseconds or more, which matters when a leaf is made while a client
waits on its CONNECT; every TLS client in use (OpenSSL, rustls, the platforms' own) verifies it,
and its handshakes are cheaper for the proxy than RSA's.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime
import ipaddress
import logging
import os
import re
import ssl
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cacheproxy.errors import CaError

log = logging.getLogger("cacheproxy")

CERT_FILE = "ca.pem"
KEY_FILE = "ca.key"
OLD_SUFFIX = ".old"
LOCK_FILE = "ca.lock"

CA_LIFETIME = datetime.timedelta(days=3650)
# A CA with less than this left is replaced: a leaf must not outlive its issuer.
CA_RENEW_BEFORE = datetime.timedelta(days=30)
LEAF_LIFETIME = datetime.timedelta(days=7)
# Clocks of containers and VMs drift: a certificate valid from an hour ago is valid "now"
# for a client a little behind.
BACKDATE = datetime.timedelta(hours=1)
# A leaf kept in memory is replaced once half its life is gone.
LEAF_RENEW_FRACTION = 0.5
LEAF_CACHE_SIZE = 256

# Permitted when every host is an address, so that no DNS name is left unconstrained (RFC 6761
# reserves the name: no real site has it).
NO_DNS_NAME = "invalid"

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n(.+?)-----END CERTIFICATE-----", re.S)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class HostNotCovered(CaError):
    """A certificate was asked for a host the CA may not vouch for."""

    def __init__(self, host: str) -> None:
        super().__init__(f"{host} is not a package host: no certificate is issued for it")
        self.host = host


# --- hosts --------------------------------------------------------------------------------


def normalize_host(host: str) -> str:
    """A host as certificates name it: lower case, no trailing dot or IPv6 brackets, an address
    in its canonical form; ``*.example.org`` for every host under example.org. Raises
    ValueError for anything else (a port, a path, a bad label)."""
    text = host.strip().lower().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(text))
    name = text[2:] if text.startswith("*.") else text
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"not a host name or address: {host!r} (give the host without a port)")
    return text


@dataclass(frozen=True)
class HostSet:
    """The package hosts: exact names, ``*.suffix`` patterns and addresses."""

    names: frozenset[str] = frozenset()
    suffixes: frozenset[str] = frozenset()  # from *.suffix: any host under suffix
    addresses: frozenset[IPAddress] = frozenset()

    @classmethod
    def of(cls, hosts: Iterable[str]) -> HostSet:
        names, suffixes, addresses = set(), set(), set()
        for host in hosts:
            normal = normalize_host(host)
            try:
                addresses.add(ipaddress.ip_address(normal))
            except ValueError:
                if normal.startswith("*."):
                    suffixes.add(normal[2:])
                else:
                    names.add(normal)
        return cls(frozenset(names), frozenset(suffixes), frozenset(addresses))

    def __bool__(self) -> bool:
        return bool(self.names or self.suffixes or self.addresses)

    def __contains__(self, host: object) -> bool:
        """Whether a leaf may be issued for this host (already normalised)."""
        if not isinstance(host, str):
            return False
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(host) in self.addresses
        return host in self.names or any(host.endswith("." + s) for s in self.suffixes)

    def hosts(self) -> list[str]:
        """The hosts, sorted: names and patterns, then addresses."""
        return sorted(self.names | {"*." + s for s in self.suffixes}) + [
            str(a) for a in sorted(self.addresses, key=lambda a: (a.version, a))
        ]

    def constraints(self) -> x509.NameConstraints:
        """The nameConstraints that permit these hosts and nothing else a client checks."""
        bases = sorted(self.names | self.suffixes)
        permitted: list[x509.GeneralName] = [x509.DNSName(b) for b in bases or [NO_DNS_NAME]]
        permitted += [
            x509.IPAddress(ipaddress.ip_network(a))
            for a in sorted(self.addresses, key=lambda a: (a.version, a))
        ]
        excluded: list[x509.GeneralName] | None = None
        if not self.addresses:
            excluded = [
                x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                x509.IPAddress(ipaddress.ip_network("::/0")),
            ]
        return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)


@dataclass(frozen=True)
class _Permitted:
    """What a CA certificate's nameConstraints let it vouch for (None: no constraints)."""

    dns: tuple[str, ...] | None
    networks: tuple[IPNetwork, ...] | None
    excluded_dns: tuple[str, ...] = ()
    excluded_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, cert: x509.Certificate) -> _Permitted:
        try:
            ext = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            return cls(None, None)
        permitted = ext.permitted_subtrees or []
        excluded = ext.excluded_subtrees or []
        dns = [n.value.lower().lstrip(".") for n in permitted if isinstance(n, x509.DNSName)]
        nets = [
            n.value
            for n in permitted
            if isinstance(n, x509.IPAddress)
            and isinstance(n.value, ipaddress.IPv4Network | ipaddress.IPv6Network)
        ]
        return cls(
            tuple(dns) if dns else None,
            tuple(nets) if nets else None,
            tuple(n.value.lower().lstrip(".") for n in excluded if isinstance(n, x509.DNSName)),
            tuple(
                n.value
                for n in excluded
                if isinstance(n, x509.IPAddress)
                and isinstance(n.value, ipaddress.IPv4Network | ipaddress.IPv6Network)
            ),
        )

    def _name_ok(self, name: str) -> bool:
        def under(base: str) -> bool:
            return not base or name == base or name.endswith("." + base)

        if any(under(b) for b in self.excluded_dns):
            return False
        return self.dns is None or any(under(b) for b in self.dns)

    def _address_ok(self, address: IPAddress) -> bool:
        if any(address in n for n in self.excluded_networks if n.version == address.version):
            return False
        return self.networks is None or any(
            address in n for n in self.networks if n.version == address.version
        )

    def uncovered(self, hosts: HostSet) -> list[str]:
        """The configured hosts this CA cannot vouch for."""
        missing = [n for n in sorted(hosts.names) if not self._name_ok(n)]
        missing += ["*." + s for s in sorted(hosts.suffixes) if not self._name_ok(s)]
        missing += [str(a) for a in sorted(hosts.addresses, key=str) if not self._address_ok(a)]
        return missing

    def describe(self) -> list[str]:
        return list(self.dns or []) + [str(n) for n in self.networks or []]


# --- files --------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write a file whole or not at all: a temporary file made with ``mode`` from its first
    moment (the umask can only narrow it), flushed to disk, then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed a public file's mode
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself, on file systems that allow it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold the CA directory against another process making a CA at the same time."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CaError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def _load_key(data: bytes, path: Path):
    # cryptography's own messages name no key material, but say nothing of the file either.
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CaError(f"{path} is an encrypted key: give it unencrypted (mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CaError(f"{path} is not a PEM private key") from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ) and not isinstance(key, ed448.Ed448PrivateKey):
        raise CaError(f"{path} holds a {type(key).__name__}: an EC, RSA or Ed25519 key is needed")
    return key


def _load_certs(data: bytes, path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise CaError(f"{path} holds no PEM certificate")
    return certs


def _public_der(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, as colon-separated upper-case hex (openssl's form)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _signing_hash(key) -> hashes.SHA256 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _load_pair(context: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """load_cert_chain reads only files: hand it the PEM through pipes, so no key of a leaf is
    ever written to a disk (a temporary file, in a private directory, where /dev/fd is not)."""
    if os.path.isdir("/dev/fd"):
        fds: list[int] = []
        try:
            for data in (chain_pem, key_pem):
                read_end, write_end = os.pipe()
                fds.append(read_end)
                try:
                    os.write(write_end, data)  # a few KiB: well under a pipe's buffer
                finally:
                    os.close(write_end)
            context.load_cert_chain(f"/dev/fd/{fds[0]}", f"/dev/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
        return
    import tempfile  # pragma: no cover - platforms without /dev/fd

    with tempfile.TemporaryDirectory() as private:  # pragma: no cover - made 0700
        cert_path, key_path = Path(private, "leaf.pem"), Path(private, "leaf.key")
        write_atomic(cert_path, chain_pem, 0o600)
        write_atomic(key_path, key_pem, 0o600)
        context.load_cert_chain(cert_path, key_path)


# --- the CA -------------------------------------------------------------------------------


@dataclass
class _Leaf:
    context: ssl.SSLContext
    renew_at: float  # time.time()


class CertificateAuthority:
    """A CA certificate and key, the hosts it may issue leaves for, and the leaves issued.

    Made with ``open`` (this proxy's own, made on first use) or ``from_files`` (an
    organisation's). The key is held in memory only; ``repr`` and every message name the files,
    never the key."""

    def __init__(
        self,
        cert: x509.Certificate,
        key,
        hosts: HostSet,
        *,
        chain: Iterable[x509.Certificate] = (),
        cert_path: Path | None = None,
        created: bool = False,
        previous_fingerprint: str | None = None,
        cache_size: int = LEAF_CACHE_SIZE,
    ) -> None:
        self._cert = cert
        self._key = key
        self.hosts = hosts
        self.cert_path = cert_path
        # What open() did: made a CA where there was none, or replaced one (its fingerprint).
        self.created = created
        self.previous_fingerprint = previous_fingerprint
        self._chain_pem = _pem(cert) + b"".join(_pem(c) for c in chain)
        self._cache_size = cache_size
        self._leaves: collections.OrderedDict[str, _Leaf] = collections.OrderedDict()
        self._leaves_lock = threading.Lock()
        self._pending: dict[str, asyncio.Future[ssl.SSLContext]] = {}
        try:
            self._aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            )
        except x509.ExtensionNotFound:
            self._aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())

    def __repr__(self) -> str:
        return f"<CertificateAuthority {self.fingerprint} at {self.cert_path}>"

    # -- making and loading

    @classmethod
    def open(
        cls, directory: Path, hosts: Iterable[str], *, renew: bool = False
    ) -> CertificateAuthority:
        """This proxy's CA in ``directory``: loaded if there is one that covers ``hosts``,
        made otherwise (on first use, or replacing one that does not cover them, is about to
        expire, or ``renew`` asks for a new one). Raises CaError for a key others may read or
        files that cannot be read, ValueError for a bad host. Blocking: call it at start-up or
        in a thread."""
        host_set = HostSet.of(hosts)
        if not host_set:
            raise ValueError("a CA needs at least one package host")
        directory.mkdir(parents=True, exist_ok=True)
        with _locked(directory):
            cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
            found = cls._load_own(cert_path, key_path)
            reason = None
            if found is None:
                if cert_path.exists() or key_path.exists():
                    reason = "is unusable (its certificate and key are not a pair)"
            elif renew:
                reason = "was renewed on request"
            else:
                cert, _ = found
                missing = _Permitted.of(cert).uncovered(host_set)
                if missing:
                    reason = f"cannot vouch for {', '.join(missing)}"
                elif cert.not_valid_after_utc - _utcnow() < CA_RENEW_BEFORE:
                    reason = f"expires on {cert.not_valid_after_utc:%Y-%m-%d}"
                else:
                    extra = sorted(
                        set(_Permitted.of(cert).describe())
                        - set(_bases_of(host_set))
                        - {NO_DNS_NAME}
                    )
                    if extra:
                        log.info(
                            "the CA still vouches for %s, no longer package hosts (no "
                            "certificate is issued for them; 'cacheproxy ca init --renew' "
                            "makes a narrower CA)",
                            ", ".join(extra),
                        )
                    return cls(cert, found[1], host_set, cert_path=cert_path)
            previous = None
            if reason is not None:
                previous = cls._retire(cert_path, key_path, found)
            cert, key = cls._make(directory, host_set)
            ca = cls(
                cert,
                key,
                host_set,
                cert_path=cert_path,
                created=True,
                previous_fingerprint=previous,
            )
            if reason is None:
                log.info("made a CA at %s, fingerprint %s", cert_path, ca.fingerprint)
            else:
                log.warning(
                    "the CA at %s (%s) %s: made a new one, fingerprint %s; clients must trust "
                    "the new certificate ('cacheproxy env --transparent')",
                    cert_path,
                    previous or "unreadable",
                    reason,
                    ca.fingerprint,
                )
            return ca

    @staticmethod
    def _load_own(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, Any] | None:
        """(cert, key) of the CA in the directory, or None when there is no usable pair."""
        if not key_path.exists() or not cert_path.exists():
            return None
        info = key_path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CaError(
                f"{key_path} may be read by others (mode {stat.S_IMODE(info.st_mode):o}): "
                f"'chmod 600 {key_path}' if it never was, or delete the directory to make a "
                "new CA"
            )
        key_pem = _read(key_path, "CA key")  # unreadable: a CaError, never a new CA
        cert_pem = _read(cert_path, "CA certificate")
        try:
            key = _load_key(key_pem, key_path)
            cert = _load_certs(cert_pem, cert_path)[0]
        except CaError as exc:
            log.warning("%s", exc)
            return None
        if _public_der(cert.public_key()) != _public_der(key.public_key()):
            log.warning("%s is not the key of %s", key_path, cert_path)
            return None
        return cert, key

    @staticmethod
    def _retire(cert_path: Path, key_path: Path, found) -> str | None:
        """Keep the old certificate beside the new one, delete its key; its fingerprint."""
        previous = fingerprint(found[0]) if found else None
        if cert_path.exists():
            os.replace(cert_path, cert_path.with_name(CERT_FILE + OLD_SUFFIX))
        with contextlib.suppress(FileNotFoundError):
            key_path.unlink()
        return previous

    @staticmethod
    def _make(
        directory: Path, hosts: HostSet
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _utcnow()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cacheproxy"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME,
                    f"cacheproxy CA {now:%Y-%m-%d} {os.urandom(4).hex()}",
                ),
            ]
        )
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(hosts.constraints(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # The key first: a certificate never sits beside a key that is not its own for long
        # (and open() makes a new pair when it finds them apart).
        write_atomic(directory / KEY_FILE, key_pem, 0o600)
        write_atomic(directory / CERT_FILE, _pem(cert), 0o644)
        return cert, key

    @classmethod
    def from_files(
        cls, cert_path: Path, key_path: Path, hosts: Iterable[str]
    ) -> CertificateAuthority:
        """An organisation's own CA (``--ca-cert``/``--ca-key``). ``cert_path`` holds the CA
        certificate whose key ``key_path`` is, and may hold the chain above it; no constraints
        are added to it (it is not ours to change), but leaves are still issued only for
        ``hosts``, and a CA whose own constraints leave one of them out is refused."""
        host_set = HostSet.of(hosts)
        if not host_set:
            raise ValueError("a CA needs at least one package host")
        certs = _load_certs(_read(cert_path, "CA certificate"), cert_path)
        key = _load_key(_read(key_path, "CA key"), key_path)
        if stat.S_IMODE(key_path.stat().st_mode) & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s may be read by others: 'chmod 600' it", key_path)
        public = _public_der(key.public_key())
        mine = [c for c in certs if _public_der(c.public_key()) == public]
        if not mine:
            raise CaError(f"{key_path} is not the key of the certificate in {cert_path}")
        cert = mine[0]
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise CaError(f"{cert_path} is not a CA certificate (basicConstraints CA:TRUE)")
        with contextlib.suppress(x509.ExtensionNotFound):
            if not cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
                raise CaError(f"{cert_path} may not sign certificates (keyUsage keyCertSign)")
        if cert.not_valid_after_utc <= _utcnow():
            raise CaError(f"{cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        missing = _Permitted.of(cert).uncovered(host_set)
        if missing:
            raise CaError(
                f"the CA in {cert_path} is constrained to other names: clients would refuse "
                f"its certificates for {', '.join(missing)}"
            )
        chain = [c for c in certs if c is not cert]
        return cls(cert, key, host_set, chain=chain, cert_path=cert_path)

    @staticmethod
    def read_certificate(directory: Path) -> bytes | None:
        """The PEM of the CA made in ``directory``, or None when there is none yet."""
        try:
            return (directory / CERT_FILE).read_bytes()
        except FileNotFoundError:
            return None

    # -- what it is

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def certificate_pem(self) -> bytes:
        return _pem(self._cert)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self._cert)

    @property
    def permitted(self) -> list[str] | None:
        """The names and networks the certificate is constrained to; None: unconstrained."""
        permitted = _Permitted.of(self._cert)
        if permitted.dns is None and permitted.networks is None:
            return None
        return permitted.describe()

    def covers(self, host: str) -> bool:
        """Whether a leaf is issued for ``host`` (a host name or address, no port)."""
        try:
            return normalize_host(host) in self.hosts
        except ValueError:
            return False

    # -- leaves

    def _check(self, host: str) -> str:
        try:
            normal = normalize_host(host)
        except ValueError:
            raise HostNotCovered(repr(host[:100])) from None
        if normal.startswith("*.") or normal not in self.hosts:
            raise HostNotCovered(normal)
        return normal

    def _cached(self, host: str) -> ssl.SSLContext | None:
        with self._leaves_lock:
            leaf = self._leaves.get(host)
            if leaf is None:
                return None
            if leaf.renew_at <= time.time():
                del self._leaves[host]
                return None
            self._leaves.move_to_end(host)
            return leaf.context

    def _keep(self, host: str, leaf: _Leaf) -> None:
        with self._leaves_lock:
            self._leaves[host] = leaf
            self._leaves.move_to_end(host)
            while len(self._leaves) > self._cache_size:
                self._leaves.popitem(last=False)

    def issue(self, host: str) -> tuple[x509.Certificate, bytes]:
        """A new leaf certificate for ``host`` and its key's PEM (kept in memory by the
        caller, never written). Raises HostNotCovered for any host outside the set."""
        host = self._check(host)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _utcnow()
        not_after = min(now + LEAF_LIFETIME, self._cert.not_valid_after_utc)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is None:
            san: list[x509.GeneralName] = [x509.DNSName(host)]
            # No common name on an address: OpenSSL checks a name-like CN against the DNS
            # constraints when the certificate has no dNSName.
            subject = x509.Name(
                [x509.NameAttribute(NameOID.COMMON_NAME, host)] if len(host) <= 64 else []
            )
        else:
            san, subject = [x509.IPAddress(address)], x509.Name([])
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            # An empty subject makes the names critical (RFC 5280 4.2.1.6).
            .add_extension(x509.SubjectAlternativeName(san), critical=not subject)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(self._aki, critical=False)
            .sign(self._key, _signing_hash(self._key))
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert, key_pem

    def _issue_context(self, host: str) -> ssl.SSLContext:
        cert, key_pem = self.issue(host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        _load_pair(context, _pem(cert) + self._chain_pem, key_pem)
        life = (cert.not_valid_after_utc - _utcnow()).total_seconds()
        self._keep(host, _Leaf(context, time.time() + life * LEAF_RENEW_FRACTION))
        return context

    def leaf_context(self, host: str) -> ssl.SSLContext:
        """A server context presenting a leaf for ``host`` (and the CA's chain): TLS 1.2 at
        least, ALPN http/1.1. Kept in memory (at most LEAF_CACHE_SIZE hosts, the least
        recently used going first) and made anew once half its life is gone. Raises
        HostNotCovered for a host outside the set. Issuing costs a few milliseconds of CPU:
        on the event loop, use ``leaf_context_async``."""
        host = self._check(host)
        return self._cached(host) or self._issue_context(host)

    async def leaf_context_async(self, host: str) -> ssl.SSLContext:
        """``leaf_context`` without blocking the loop: a leaf is issued in a thread, once
        for any number of connections waiting on the same host. A caller cancelled while
        waiting leaves the issuance running for the others."""
        host = self._check(host)
        cached = self._cached(host)
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        pending = self._pending.get(host)
        if pending is None or pending.get_loop() is not loop:
            pending = asyncio.ensure_future(asyncio.to_thread(self._issue_context, host))
            self._pending[host] = pending

            def done(task: asyncio.Future, host: str = host) -> None:
                if self._pending.get(host) is task:
                    del self._pending[host]
                if not task.cancelled():
                    task.exception()  # retrieved: no "never retrieved" noise when all left

            pending.add_done_callback(done)
        return await asyncio.shield(pending)

    # -- trust

    def bundle(self, path: Path, *, system: Path | None = None) -> Path | None:
        """Write to ``path`` (atomically, mode 0644) the system's CA certificates followed by
        this CA's, the one file SSL_CERT_FILE, REQUESTS_CA_BUNDLE and PIP_CERT name. The
        system's come from ``system``, else SSL_CERT_FILE (unless it is ``path`` itself),
        OpenSSL's default file, or certifi's; returns the file used (None: only this CA's
        certificate went in, and clients then trust no other site)."""
        source = system or system_ca_file(exclude=path)
        own_der = self._cert.public_bytes(serialization.Encoding.DER)
        blocks: list[bytes] = []
        if source is not None:
            seen = {own_der}
            for match in _PEM_CERT.finditer(_read(source, "CA bundle")):
                body = match.group(1)
                try:
                    der = base64.b64decode(b"".join(body.split()), validate=True)
                except ValueError:
                    continue
                if der in seen:
                    continue
                seen.add(der)
                blocks.append(_pem_block(der))
        else:
            log.warning("no system CA bundle found: %s holds only cacheproxy's CA", path)
        subject = self._cert.subject.rfc4514_string()
        blocks.append(
            f"# cacheproxy CA: {subject}\n# SHA-256 {self.fingerprint}\n".encode()
            + _pem_block(own_der)
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, b"".join(blocks), 0o644)
        return source


def _bases_of(hosts: HostSet) -> list[str]:
    return sorted(hosts.names | hosts.suffixes) + [
        str(ipaddress.ip_network(a)) for a in hosts.addresses
    ]


def _pem_block(der: bytes) -> bytes:
    text = base64.b64encode(der)
    lines = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"


def system_ca_file(*, exclude: Path | None = None) -> Path | None:
    """The system's CA bundle: SSL_CERT_FILE, OpenSSL's default file, or certifi's; a file
    that is ``exclude`` (the bundle being written, which SSL_CERT_FILE may already name) is
    skipped."""
    paths = ssl.get_default_verify_paths()
    candidates = [os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile]
    try:
        import certifi

        candidates.append(certifi.where())
    except ImportError:
        pass
    skip = exclude.resolve() if exclude is not None else None
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate)
        if path.is_file() and path.resolve() != skip:
            return path
    return None

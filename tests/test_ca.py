"""The transparent face's CA, checked with real TLS handshakes: a client that trusts only this
CA accepts its leaves for the package hosts, and refuses (through the CA's name constraints) a
certificate for any other name, even one signed with the CA's own key."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import socket
import ssl
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from uv import find_uv_bin

from cacheproxy.cli.main import main as cli
from cacheproxy.errors import CacheproxyError, CaError
from cacheproxy.http import ca as ca_module
from cacheproxy.http.ca import CertificateAuthority, HostNotCovered, HostSet, normalize_host

HOSTS = ["pkgs.test", "files.test", "127.0.0.2"]

# OpenSSL's verify codes for a name outside a CA's permitted / inside its excluded subtrees.
PERMITTED_VIOLATION = 47
EXCLUDED_VIOLATION = 48


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "ca"


@pytest.fixture
def authority(ca_dir: Path) -> CertificateAuthority:
    return CertificateAuthority.open(ca_dir, HOSTS)


def client_context(*cafiles: Path) -> ssl.SSLContext:
    """A client that trusts only the given files (no system store), checking host names."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for cafile in cafiles:
        context.load_verify_locations(cafile=str(cafile))
    context.set_alpn_protocols(["http/1.1"])
    return context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str):
    """A real TLS handshake over loopback: the client's (version, ALPN, peer cert), or the
    client's exception. The server reads one byte and answers it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(1))
        except (ssl.SSLError, OSError):
            pass  # the client refused: it is the client's side the test looks at

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            tls.sendall(b"!")
            assert tls.recv(1) == b"!"
            return tls.version(), tls.selected_alpn_protocol(), tls.getpeercert()
    finally:
        thread.join(10)
        listener.close()


def ca_key(ca_dir: Path):
    return serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)


def forged_leaf(ca_dir: Path, name: x509.GeneralName, *, cn: str | None = None) -> ssl.SSLContext:
    """A leaf for any name, signed with the CA's key directly, bypassing the API's check:
    what someone holding a leaked key could make."""
    issuer = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()), False
        )
        .sign(ca_key(ca_dir), hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca_module._load_pair(context, cert.public_bytes(serialization.Encoding.PEM), key_pem)
    return context


# --- handshakes ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["pkgs.test", "files.test", "127.0.0.2"])
def test_a_client_trusting_only_the_ca_accepts_a_leaf(authority, ca_dir, host):
    version, alpn, peer = handshake(
        authority.leaf_context(host), client_context(ca_dir / "ca.pem"), host
    )
    assert version in ("TLSv1.2", "TLSv1.3")
    assert alpn == "http/1.1"
    kind = "IP Address" if host[0].isdigit() else "DNS"
    assert peer["subjectAltName"] == ((kind, host),)


def test_the_host_name_is_checked(authority, ca_dir):
    # A leaf for one package host does not pass for another.
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(
            authority.leaf_context("pkgs.test"), client_context(ca_dir / "ca.pem"), "files.test"
        )


def test_a_client_trusting_other_cas_refuses_the_leaf(authority):
    other = trustme.CA()
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    other.configure_trust(client)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(authority.leaf_context("pkgs.test"), client, "pkgs.test")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_below_1_2_is_refused(authority, ca_dir):
    client = client_context(ca_dir / "ca.pem")
    client.minimum_version = ssl.TLSVersion.TLSv1
    client.maximum_version = ssl.TLSVersion.TLSv1_1
    server = authority.leaf_context("pkgs.test")
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(server, client, "pkgs.test")


async def test_an_asyncio_server_with_the_async_leaf(authority, ca_dir):
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(
        echo, "127.0.0.1", 0, ssl=await authority.leaf_context_async("pkgs.test")
    )
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(ca_dir / "ca.pem"), server_hostname="pkgs.test"
        )
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        writer.close()
        await writer.wait_closed()


# --- the constraints ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.test", "pkgs.test.evil.test", "127.0.0.3", "*.pkgs.test"])
async def test_no_certificate_outside_the_hosts_comes_from_the_api(authority, host):
    with pytest.raises(HostNotCovered, match="not a package host") as caught:
        authority.leaf_context(host)
    assert isinstance(caught.value, CaError) and isinstance(caught.value, CacheproxyError)
    with pytest.raises(HostNotCovered):
        authority.issue(host)
    with pytest.raises(HostNotCovered):
        await authority.leaf_context_async(host)
    assert not authority.covers(host)


def test_garbage_hosts_are_refused_in_one_line(authority):
    for host in ["pkgs.test:443", "", "a b", "pkgs.test/x", "x" * 300]:
        with pytest.raises(HostNotCovered) as caught:
            authority.leaf_context(host)
        assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_the_ca_is_name_constrained_to_the_hosts(authority):
    cert = authority.certificate
    ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical
    assert set(ext.value.permitted_subtrees) == {
        x509.DNSName("pkgs.test"),
        x509.DNSName("files.test"),
        x509.IPAddress(ipaddress.ip_network("127.0.0.2/32")),
    }
    assert not ext.value.excluded_subtrees
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"


def test_with_no_address_among_the_hosts_every_address_is_excluded(tmp_path):
    authority = CertificateAuthority.open(tmp_path / "ca", ["pkgs.test"])
    ext = authority.certificate.extensions.get_extension_for_class(x509.NameConstraints).value
    assert set(ext.excluded_subtrees) == {
        x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
        x509.IPAddress(ipaddress.ip_network("::/0")),
    }


@pytest.mark.parametrize(
    "name, server_hostname",
    [
        (x509.DNSName("evil.test"), "evil.test"),
        (x509.DNSName("bank.example"), "bank.example"),
        (x509.IPAddress(ipaddress.ip_address("127.0.0.3")), "127.0.0.3"),
    ],
)
def test_a_client_rejects_a_forged_leaf_outside_the_constraints(
    authority, ca_dir, name, server_hostname
):
    # Signed with the CA's own key, so only the name constraints stand in the way.
    server = forged_leaf(ca_dir, name)
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(server, client_context(ca_dir / "ca.pem"), server_hostname)
    assert caught.value.verify_code == PERMITTED_VIOLATION
    assert "permitted subtree violation" in caught.value.verify_message


def test_the_forgery_would_pass_but_for_the_constraints(authority, ca_dir):
    # The control: the same kind of forged leaf, for a package host, is accepted, so the
    # rejections above come from the constraints and not from the forging.
    server = forged_leaf(ca_dir, x509.DNSName("pkgs.test"))
    assert handshake(server, client_context(ca_dir / "ca.pem"), "pkgs.test")[0]


def test_an_address_is_refused_by_a_ca_for_names_only(tmp_path):
    ca_dir = tmp_path / "ca"
    CertificateAuthority.open(ca_dir, ["pkgs.test"])
    server = forged_leaf(ca_dir, x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(server, client_context(ca_dir / "ca.pem"), "127.0.0.1")
    assert caught.value.verify_code == EXCLUDED_VIOLATION


def test_a_name_is_refused_by_a_ca_for_addresses_only(tmp_path):
    ca_dir = tmp_path / "ca"
    authority = CertificateAuthority.open(ca_dir, ["127.0.0.2"])
    assert handshake(
        authority.leaf_context("127.0.0.2"), client_context(ca_dir / "ca.pem"), "127.0.0.2"
    )
    server = forged_leaf(ca_dir, x509.DNSName("evil.test"))
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(server, client_context(ca_dir / "ca.pem"), "evil.test")
    assert caught.value.verify_code == PERMITTED_VIOLATION


class EmptyIndex(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def uv_resolves_through(server_context: ssl.SSLContext, cafile: Path, tmp_path: Path) -> str:
    """uv (rustls, not OpenSSL) resolving one requirement against an index served with this
    context at https://localhost:PORT/: its output."""
    httpd = HTTPServer(("127.0.0.1", 0), EmptyIndex)
    httpd.socket = server_context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    env = {
        **os.environ,
        "SSL_CERT_FILE": str(cafile),
        "UV_NO_CACHE": "1",
        "NO_PROXY": "*",
        "HOME": str(tmp_path),
    }
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "SSL_CERT_DIR"):
        env.pop(name, None)
    try:
        result = subprocess.run(
            [find_uv_bin(), "pip", "compile", "--no-config", "--index-url",
             f"https://localhost:{httpd.server_address[1]}/simple/", "-"],
            input="attrs", capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
    finally:
        httpd.shutdown()
        httpd.server_close()
    return result.stderr


def test_rustls_enforces_the_constraints_too(tmp_path):
    # uv verifies with rustls-webpki: a leaf from the API is accepted (the index answers,
    # empty), a forged one outside the constraints is refused as a constraint violation.
    good = tmp_path / "good"
    authority = CertificateAuthority.open(good, ["localhost"])
    output = uv_resolves_through(authority.leaf_context("localhost"), good / "ca.pem", tmp_path)
    assert "there are no versions of attrs" in output, output
    bad = tmp_path / "bad"
    CertificateAuthority.open(bad, ["pkgs.test"])
    output = uv_resolves_through(
        forged_leaf(bad, x509.DNSName("localhost")), bad / "ca.pem", tmp_path
    )
    assert "NameConstraintViolation" in output, output


def test_a_pattern_host_covers_the_hosts_under_it(tmp_path):
    ca_dir = tmp_path / "ca"
    authority = CertificateAuthority.open(ca_dir, ["*.files.test"])
    client = client_context(ca_dir / "ca.pem")
    assert handshake(authority.leaf_context("a.files.test"), client, "a.files.test")
    assert handshake(authority.leaf_context("b.c.files.test"), client, "b.c.files.test")
    for host in ["files.test", "evil.test", "files.test.evil.test"]:
        with pytest.raises(HostNotCovered):
            authority.leaf_context(host)


def test_host_names_are_normalised():
    assert normalize_host("PKGS.Test.") == "pkgs.test"
    assert normalize_host("[::1]") == "::1"
    assert normalize_host("*.Files.Test") == "*.files.test"
    hosts = HostSet.of(["PKGS.test", "127.0.0.2", "*.files.test"])
    assert "pkgs.test" in hosts and "127.0.0.2" in hosts and "a.files.test" in hosts
    assert "files.test" not in hosts and "127.0.0.3" not in hosts
    with pytest.raises(ValueError, match="without a port"):
        normalize_host("pkgs.test:443")


# --- the leaf -----------------------------------------------------------------------------


def test_the_leaf_is_short_lived_p256_for_server_auth(authority):
    cert, key_pem = authority.issue("pkgs.test")
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=1) < life <= datetime.timedelta(days=8)
    assert cert.public_key().curve.name == "secp256r1"
    assert cert.issuer == authority.certificate.subject
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert b"PRIVATE KEY" in key_pem  # the caller's to hold in memory


def test_an_address_leaf_has_no_common_name_and_critical_names(authority):
    cert, _ = authority.issue("127.0.0.2")
    assert len(cert.subject) == 0
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.2")]


def test_leaves_are_kept_and_the_cache_is_bounded(ca_dir, monkeypatch):
    authority = CertificateAuthority.open(ca_dir, ["a.test", "b.test", "c.test"])
    authority._cache_size = 2
    first = authority.leaf_context("a.test")
    assert authority.leaf_context("a.test") is first
    authority.leaf_context("b.test")
    authority.leaf_context("c.test")  # a.test, least recently used, goes
    assert len(authority._leaves) == 2
    assert authority.leaf_context("a.test") is not first


def test_a_leaf_is_issued_anew_after_half_its_life(authority, monkeypatch):
    first = authority.leaf_context("pkgs.test")
    assert authority.leaf_context("pkgs.test") is first
    later = ca_module.time.time() + ca_module.LEAF_LIFETIME.total_seconds() * 0.6
    monkeypatch.setattr(ca_module.time, "time", lambda: later)
    assert authority.leaf_context("pkgs.test") is not first


async def test_concurrent_requests_for_a_host_issue_once_in_a_thread(authority, monkeypatch):
    loop_thread = threading.get_ident()
    calls = []
    real_issue = authority.issue

    def counting_issue(host):
        calls.append((host, threading.get_ident()))
        return real_issue(host)

    monkeypatch.setattr(authority, "issue", counting_issue)
    contexts = await asyncio.gather(
        *[authority.leaf_context_async("pkgs.test") for _ in range(20)],
        *[authority.leaf_context_async("files.test") for _ in range(5)],
    )
    assert sorted(host for host, _ in calls) == ["files.test", "pkgs.test"]
    assert all(thread != loop_thread for _, thread in calls)
    assert len({id(c) for c in contexts[:20]}) == 1
    assert contexts[20] is not contexts[0]
    assert not authority._pending
    assert await authority.leaf_context_async("pkgs.test") is contexts[0]  # from memory


async def test_a_cancelled_waiter_leaves_the_issuance_to_the_others(authority):
    first = asyncio.ensure_future(authority.leaf_context_async("pkgs.test"))
    second = asyncio.ensure_future(authority.leaf_context_async("pkgs.test"))
    await asyncio.sleep(0)
    first.cancel()
    context = await second
    assert isinstance(context, ssl.SSLContext)
    assert authority.leaf_context("pkgs.test") is context


# --- the files ----------------------------------------------------------------------------


def test_the_key_is_owner_only_and_the_certificate_readable(authority, ca_dir):
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((ca_dir / "ca.pem").stat().st_mode) == 0o644


def test_the_key_is_created_owner_only_from_its_first_moment(ca_dir, monkeypatch):
    # Every file that ever held the key was opened with mode 0600, then renamed into place;
    # with a umask of 0 nothing narrows it after the fact.
    opened = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        if flags & os.O_CREAT:
            opened.append((Path(path).name, mode, stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd

    monkeypatch.setattr(os, "open", spy)
    old_umask = os.umask(0)
    try:
        CertificateAuthority.open(ca_dir, HOSTS)
    finally:
        os.umask(old_umask)
    key_files = [entry for entry in opened if "ca.key" in entry[0]]
    assert key_files, opened
    assert all(name.endswith(".tmp") for name, _, _ in key_files)  # never written in place
    assert all(mode == 0o600 and actual == 0o600 for _, mode, actual in key_files)
    assert not [p for p in ca_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_key_others_may_read_is_refused(authority, ca_dir):
    (ca_dir / "ca.key").chmod(0o644)
    with pytest.raises(CaError, match="may be read by others"):
        CertificateAuthority.open(ca_dir, HOSTS)


def test_reloading_keeps_the_ca(authority, ca_dir):
    again = CertificateAuthority.open(ca_dir, HOSTS)
    assert again.fingerprint == authority.fingerprint
    assert not again.created
    assert handshake(
        again.leaf_context("pkgs.test"), client_context(ca_dir / "ca.pem"), "pkgs.test"
    )


def test_fewer_hosts_keep_the_ca_and_issue_only_for_them(authority, ca_dir, caplog):
    with caplog.at_level(logging.INFO, logger="cacheproxy"):
        narrower = CertificateAuthority.open(ca_dir, ["pkgs.test"])
    assert narrower.fingerprint == authority.fingerprint
    assert "still vouches for 127.0.0.2/32, files.test" in caplog.text
    with pytest.raises(HostNotCovered):
        narrower.leaf_context("files.test")


def test_a_new_host_makes_a_new_ca_and_retires_the_old(authority, ca_dir, caplog):
    old_pem = authority.certificate_pem
    with caplog.at_level(logging.WARNING, logger="cacheproxy"):
        wider = CertificateAuthority.open(ca_dir, [*HOSTS, "mirror.test"])
    assert wider.fingerprint != authority.fingerprint
    assert wider.created and wider.previous_fingerprint == authority.fingerprint
    assert (ca_dir / "ca.pem.old").read_bytes() == old_pem
    assert {p.name for p in ca_dir.iterdir()} == {"ca.pem", "ca.key", "ca.pem.old", "ca.lock"}
    # Both fingerprints are named, and what to do about it.
    assert authority.fingerprint in caplog.text and wider.fingerprint in caplog.text
    assert "cannot vouch for mirror.test" in caplog.text
    assert "clients must trust the new certificate" in caplog.text
    # The new CA serves the new host; a client still trusting only the old one refuses it.
    assert handshake(
        wider.leaf_context("mirror.test"), client_context(ca_dir / "ca.pem"), "mirror.test"
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(
            wider.leaf_context("pkgs.test"), client_context(ca_dir / "ca.pem.old"), "pkgs.test"
        )
    assert (
        CertificateAuthority.open(ca_dir, [*HOSTS, "mirror.test"]).fingerprint == wider.fingerprint
    )


def test_renew_makes_a_new_ca_even_when_the_old_covers_the_hosts(authority, ca_dir):
    renewed = CertificateAuthority.open(ca_dir, ["pkgs.test"], renew=True)
    assert renewed.fingerprint != authority.fingerprint
    assert renewed.permitted == ["pkgs.test"]


def test_a_ca_near_its_end_is_replaced(authority, ca_dir, monkeypatch):
    future = authority.certificate.not_valid_after_utc - datetime.timedelta(days=10)
    monkeypatch.setattr(ca_module, "_utcnow", lambda: future)
    assert CertificateAuthority.open(ca_dir, HOSTS).fingerprint != authority.fingerprint


def test_a_key_that_is_not_the_certificates_makes_a_new_ca(authority, ca_dir, caplog):
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_module.write_atomic(ca_dir / "ca.key", other, 0o600)
    with caplog.at_level(logging.WARNING, logger="cacheproxy"):
        again = CertificateAuthority.open(ca_dir, HOSTS)
    assert again.fingerprint != authority.fingerprint
    assert "is not the key of" in caplog.text
    assert "PRIVATE KEY" not in caplog.text


def test_the_leaf_never_outlives_the_ca(authority, monkeypatch):
    near_end = authority.certificate.not_valid_after_utc - datetime.timedelta(days=2)
    monkeypatch.setattr(ca_module, "_utcnow", lambda: near_end)
    cert, _ = authority.issue("pkgs.test")
    assert cert.not_valid_after_utc == authority.certificate.not_valid_after_utc


# --- an organisation's CA -----------------------------------------------------------------


@pytest.fixture
def org_ca(tmp_path: Path):
    org = trustme.CA(organization_name="Example Org")
    cert, key = tmp_path / "org.pem", tmp_path / "org.key"
    org.cert_pem.write_to_path(str(cert))
    org.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return org, cert, key


def test_an_organisations_ca_issues_for_the_hosts_only(org_ca):
    org, cert, key = org_ca
    authority = CertificateAuthority.from_files(cert, key, ["pkgs.test"])
    assert authority.permitted is None  # not ours to constrain
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    org.configure_trust(client)
    assert handshake(authority.leaf_context("pkgs.test"), client, "pkgs.test")
    with pytest.raises(HostNotCovered):
        authority.leaf_context("evil.test")


def test_an_organisations_intermediate_is_served_with_its_chain(tmp_path):
    root = trustme.CA()
    intermediate = root.create_child_ca()
    cert, key = tmp_path / "int.pem", tmp_path / "int.key"
    intermediate.cert_pem.write_to_path(str(cert))
    intermediate.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    authority = CertificateAuthority.from_files(cert, key, ["pkgs.test"])
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    root.configure_trust(client)  # trusts the root only: the intermediate comes from the server
    assert handshake(authority.leaf_context("pkgs.test"), client, "pkgs.test")


def test_an_organisations_files_are_checked(org_ca, tmp_path):
    _, cert, key = org_ca
    other_key = tmp_path / "other.key"
    trustme.CA().private_key_pem.write_to_path(str(other_key))
    with pytest.raises(CaError, match="is not the key of"):
        CertificateAuthority.from_files(cert, other_key, ["pkgs.test"])
    leaf = trustme.CA().issue_cert("pkgs.test")
    leaf_cert, leaf_key = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    leaf.cert_chain_pems[0].write_to_path(str(leaf_cert))
    leaf.private_key_pem.write_to_path(str(leaf_key))
    with pytest.raises(CaError, match="not a CA certificate"):
        CertificateAuthority.from_files(leaf_cert, leaf_key, ["pkgs.test"])
    with pytest.raises(CaError, match="cannot read"):
        CertificateAuthority.from_files(tmp_path / "missing.pem", key, ["pkgs.test"])
    (tmp_path / "junk.key").write_text("junk")
    with pytest.raises(CaError, match="not a PEM private key"):
        CertificateAuthority.from_files(cert, tmp_path / "junk.key", ["pkgs.test"])


def test_an_organisations_constrained_ca_must_cover_the_hosts(tmp_path):
    CertificateAuthority.open(tmp_path / "theirs", ["pkgs.test"])
    with pytest.raises(CaError, match="clients would refuse its certificates for files.test"):
        CertificateAuthority.from_files(
            tmp_path / "theirs" / "ca.pem", tmp_path / "theirs" / "ca.key", ["files.test"]
        )


# --- the bundle ---------------------------------------------------------------------------


def test_the_bundle_holds_the_system_cas_and_this_one(authority, ca_dir, tmp_path):
    other = trustme.CA()
    system = tmp_path / "system.pem"
    # A system bundle with comments, a duplicate, and (already) this CA's certificate.
    system.write_bytes(
        b"# a comment\n"
        + other.cert_pem.bytes()
        + b"\n"
        + other.cert_pem.bytes()
        + authority.certificate_pem
    )
    bundle = tmp_path / "out" / "bundle.pem"
    assert authority.bundle(bundle, system=system) == system
    certs = x509.load_pem_x509_certificates(bundle.read_bytes())
    assert [c.subject for c in certs] == [
        x509.load_pem_x509_certificate(other.cert_pem.bytes()).subject,
        authority.certificate.subject,
    ]
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o644
    assert authority.fingerprint in bundle.read_text()
    # One file trusted for both: this CA's leaves and the other sites'.
    client = client_context(bundle)
    assert handshake(authority.leaf_context("pkgs.test"), client, "pkgs.test")
    other_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    other.issue_cert("site.test").configure_cert(other_server)
    assert handshake(other_server, client, "site.test")


def test_the_bundle_takes_ssl_cert_file_but_never_itself(authority, tmp_path, monkeypatch):
    other = trustme.CA()
    system = tmp_path / "corporate.pem"
    other.cert_pem.write_to_path(str(system))
    bundle = tmp_path / "bundle.pem"
    monkeypatch.setenv("SSL_CERT_FILE", str(system))
    assert authority.bundle(bundle) == system
    assert len(x509.load_pem_x509_certificates(bundle.read_bytes())) == 2
    # Written again while SSL_CERT_FILE names the bundle itself (as after 'env --transparent'):
    # the bundle is made from the system's file, not from its own previous copy.
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    source = authority.bundle(bundle)
    assert source is not None and source.resolve() != bundle.resolve()
    written = bundle.read_bytes()
    assert other.cert_pem.bytes() not in written
    assert written.count(authority.certificate_pem) == 1


# --- the key stays secret, and the command line -------------------------------------------


def key_body(ca_dir: Path) -> str:
    # A line of the key's base64, which no output may contain either.
    return (ca_dir / "ca.key").read_text().splitlines()[1]


def test_the_key_appears_nowhere(authority, ca_dir, caplog, tmp_path):
    with caplog.at_level(logging.DEBUG, logger="cacheproxy"):
        CertificateAuthority.open(ca_dir, HOSTS)
        CertificateAuthority.open(ca_dir, [*HOSTS, "new.test"])
        authority.bundle(tmp_path / "bundle.pem")
    texts = [caplog.text, repr(authority), str(vars(authority).get("cert_path"))]
    for error in [
        pytest.raises(HostNotCovered, authority.leaf_context, "evil.test"),
        pytest.raises(
            CaError, CertificateAuthority.from_files, ca_dir / "ca.key", ca_dir / "ca.key", HOSTS
        ),
    ]:
        texts.append(str(error.value))
    texts.append((tmp_path / "bundle.pem").read_text())
    for text in texts:
        assert "PRIVATE KEY" not in text
        assert key_body(ca_dir) not in text


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_ca_init_makes_the_ca_and_prints_its_fingerprint(tmp_path):
    cache = tmp_path / "cache"
    code, output = run(
        "ca", "init", "--cache-dir", str(cache), "--host", "pkgs.test", "--host", "127.0.0.2"
    )
    assert code == 0, output
    authority = CertificateAuthority.open(cache / "ca", ["pkgs.test", "127.0.0.2"])
    assert f"SHA-256 fingerprint: {authority.fingerprint}" in output
    assert f"made a CA at {cache / 'ca' / 'ca.pem'}" in output
    assert "vouches for: pkgs.test, 127.0.0.2/32" in output
    assert stat.S_IMODE((cache / "ca" / "ca.key").stat().st_mode) == 0o600

    code, output = run("ca", "init", "--cache-dir", str(cache), "--host", "pkgs.test")
    assert code == 0 and "kept the CA" in output and authority.fingerprint in output

    code, output = run("ca", "init", "--cache-dir", str(cache), "--intercept-host", "files.test")
    assert code == 0
    assert "made a new CA" in output and f"previous one ({authority.fingerprint})" in output
    assert "must trust the new certificate" in output
    for text in [output]:
        assert "PRIVATE KEY" not in text and key_body(cache / "ca") not in text


def test_ca_init_defaults_to_the_upstream_host(tmp_path):
    code, output = run(
        "ca", "init", "--cache-dir", str(tmp_path), "--upstream", "https://mirror.test/simple/"
    )
    assert code == 0, output
    assert "vouches for: mirror.test" in output


def test_ca_prints_the_certificate_and_never_the_key(tmp_path):
    cache = tmp_path / "cache"
    run("ca", "init", "--cache-dir", str(cache), "--host", "pkgs.test")
    pem = (cache / "ca" / "ca.pem").read_text()
    outputs = []
    for args in (["ca", "--cache-dir", str(cache)], ["ca", "show", "--cache-dir", str(cache)]):
        code, output = run(*args)
        assert code == 0 and output == pem
        outputs.append(output)
    code, output = run("ca", "show", "--fingerprint", "--cache-dir", str(cache))
    fingerprint = CertificateAuthority.open(cache / "ca", ["pkgs.test"]).fingerprint
    assert code == 0 and output == fingerprint + "\n"
    code, output = run("ca", "--cache-dir", str(cache), "--fingerprint")
    assert output == fingerprint + "\n"
    for text in [*outputs, output]:
        assert "PRIVATE KEY" not in text and key_body(cache / "ca") not in text


def test_ca_without_a_ca_or_with_a_bad_host_fails_in_one_line(tmp_path):
    code, output = run("ca", "--cache-dir", str(tmp_path))
    assert code == 2 and "no CA in" in output and "cacheproxy ca init" in output
    code, output = run("ca", "init", "--cache-dir", str(tmp_path), "--host", "pkgs.test:443")
    assert code == 2 and "without a port" in output and len(output.splitlines()) == 1

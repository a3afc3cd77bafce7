"""The fake upstream (tests/fakes/upstream.py) served over HTTPS under its own name.

Real clients refuse plain HTTP for most things that matter here (a lock's file URLs, a proxy's
CONNECT), and skip a proxy for `localhost`: so the upstream listens on 127.0.0.2, a loopback
address no client treats as local, with a trustme certificate for that address. A client
trusts it through `ca_file` (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, PIP_CERT); nothing of this
machine's own trust is involved.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trustme
from aiohttp import web

from tests.fakes.upstream import UpstreamIndex, make_app

HOST = "127.0.0.2"


@dataclass
class HttpsUpstream:
    index: UpstreamIndex
    ca: trustme.CA
    ca_file: Path  # the trustme CA certificate (PEM): what a client must trust
    host: str
    port: int
    runner: web.AppRunner

    @property
    def origin(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def simple_url(self) -> str:
        return f"{self.origin}/simple/"

    def file_requests(self) -> int:
        """GETs of whole or ranged files (metadata included) so far."""
        return sum(n for (method, path), n in self.index.requests.items() if "/files/" in path)

    async def stop(self) -> None:
        await self.runner.cleanup()


def _write_ca(ca: trustme.CA, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca_file


@contextlib.asynccontextmanager
async def https_upstream(
    index: UpstreamIndex, directory: Path, host: str = HOST
) -> AsyncIterator[HttpsUpstream]:
    """Serve `index` at https://HOST:<random port>/simple/ until the block ends; the CA
    certificate is written into `directory`."""
    ca = trustme.CA()
    ca_file = _write_ca(ca, directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(context)
    runner = web.AppRunner(make_app(index), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    upstream = HttpsUpstream(index, ca, ca_file, host, port, runner)
    try:
        yield upstream
    finally:
        await upstream.stop()

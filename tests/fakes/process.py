"""The proxy as a real process, for tests that kill it or measure it."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from tests.fakes.clients import clean_env


class ProxyProcess:
    def __init__(
        self,
        cache_dir: Path,
        upstream_url: str,
        *args: str,
        launcher: tuple[str, ...] = (),
        pass_fds: tuple[int, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """launcher: a command that execs the proxy's command line given after it. env: more
        variables for the proxy (say, SSL_CERT_FILE naming what its upstream client trusts)."""
        environment = clean_env()
        environment.update(CACHEPROXY_CACHE_DIR=str(cache_dir), CACHEPROXY_UPSTREAM=upstream_url)
        environment.update(env or {})
        self.proc = subprocess.Popen(
            [*launcher, sys.executable, "-m", "cacheproxy", "serve", "--port", "0", *args],
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            pass_fds=pass_fds,
        )
        self.log: list[str] = []
        for line in self.proc.stderr:
            self.log.append(line)
            match = re.search(r"UV_DEFAULT_INDEX=(\S+)", line)
            if match:
                break
        else:
            self.proc.kill()
            raise AssertionError(f"proxy did not start: {''.join(self.log)}")
        self.url = match.group(1)
        # Drained continuously: a full stderr pipe would stall the proxy.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
        return kib / 1024

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

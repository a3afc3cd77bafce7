"""What the environment tells the upstream client: proxy variables and netrc credentials.

aiohttp's `trust_env` reads both again for every request, each in a worker thread: two turns
through the thread pool that also parses pages, and the netrc file read twice, before a
request leaves. A cold resolution sends hundreds of small range requests, each one waiting
there behind page parses. So both are read once, as the session opens, and a request then
finds its credentials in memory. With proxy variables set, aiohttp keeps choosing the proxy
for each request itself: whether a host bypasses the proxy is its rule, redirects included.
"""

from __future__ import annotations

import netrc
from dataclasses import dataclass

from aiohttp.helpers import basicauth_from_netrc, netrc_from_env, proxies_from_env


@dataclass(frozen=True)
class ClientEnvironment:
    uses_proxies: bool  # proxy variables are set: aiohttp reads the environment per request
    netrc: netrc.netrc | None

    @classmethod
    def read(cls) -> ClientEnvironment:
        """Blocking (a file read): call it in a worker thread."""
        return cls(uses_proxies=bool(proxies_from_env()), netrc=netrc_from_env())

    def authorization(self, host: str | None) -> str | None:
        """The Authorization header the netrc file gives this host, as aiohttp would send it;
        None when it gives none, or when aiohttp looks the file up itself (proxies)."""
        if self.uses_proxies or self.netrc is None or host is None:
            return None
        try:
            return basicauth_from_netrc(self.netrc, host).encode()
        except (LookupError, ValueError):  # no entry, or a login aiohttp cannot send
            return None

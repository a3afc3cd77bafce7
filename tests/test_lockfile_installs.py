"""Lock files install through the proxy's transparent face, unchanged, and then from the cache.

Each real client locks a project directly against the fake upstream served over HTTPS on
127.0.0.2 (tests/fakes/lockfiles.py), as a developer locks against the public index. The lock is
then installed into a fresh environment told nothing but the lines `cacheproxy env
--transparent` prints (the real CLI, its JSON read back) on top of an environment isolated from
this machine: the client trusts the proxy's CA bundle and not the upstream's CA, so a file it
got can only have come through the proxy. The proxy is a real `cacheproxy serve` process whose
upstream is the fake's URL; it trusts the fake's CA itself (SSL_CERT_FILE in its own
environment, which is not the clients').

For each install: it succeeds; the upstream served the files and the proxy counted them as
requests to its transparent face; the lock file is byte for byte what the client wrote; and a
second install, into another fresh environment with the upstream stopped, succeeds from the
cache.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.clients import clean_env, run
from tests.fakes.https_upstream import HttpsUpstream, https_upstream
from tests.fakes.lockfiles import (
    INSTALLED,
    INSTALLS,
    ClientMissing,
    Locked,
    client_env,
    lock_or_skip,
    small_index,
)
from tests.fakes.process import ProxyProcess

# What the files of INSTALLED are called upstream: each is fetched once, through the proxy.
FILES = ("tinyalpha-2.0-py3-none-any.whl", "beta_helper-1.0-py3-none-any.whl")


async def transparent_lines(proxy: ProxyProcess, cache_dir: Path, upstream_url: str) -> dict:
    """What `cacheproxy env --transparent --format json` says to set, with serve's settings
    (the same cache, so the same CA) and the running proxy's address. Run without the
    upstream's CA in its environment: the bundle it writes holds the system's CAs and the
    proxy's, nothing of the fake upstream's."""
    env = clean_env()
    env.update(CACHEPROXY_CACHE_DIR=str(cache_dir), CACHEPROXY_UPSTREAM=upstream_url)
    args = [sys.executable, "-m", "cacheproxy", "env", "--transparent", "--format", "json",
            "--url", proxy.url]  # fmt: skip
    printed = json.loads((await run(args, env, timeout=60)).assert_ok().stdout)
    return printed["env"]


@dataclass(frozen=True)
class Counts:
    """What the proxy's metrics say of its transparent face: requests by kind (file, page,
    json-api) and status, and file cache outcomes (hit, miss, ...)."""

    requests: dict[tuple[str, int], float]
    file_outcomes: dict[str, float]

    def files_served(self) -> float:
        return sum(
            n for (kind, status), n in self.requests.items() if kind == "file" and status < 300
        )

    def failed(self) -> dict[tuple[str, int], float]:
        return {key: n for key, n in self.requests.items() if key[1] >= 400 and n}


async def counts_of(proxy: ProxyProcess) -> Counts:
    url = proxy.url.removesuffix("simple/") + "metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    requests: dict[tuple[str, int], float] = {}
    outcomes: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            route = labels.get("route", "")
            if sample.name == "cacheproxy_requests_total" and route.startswith("transparent "):
                requests[route.removeprefix("transparent "), int(labels["status"])] = sample.value
            elif sample.name == "cacheproxy_cache_outcomes_total" and labels["kind"] == "file":
                outcomes[labels["outcome"]] = sample.value
    return Counts(requests, outcomes)


def upstream_files(upstream: HttpsUpstream) -> dict[str, int]:
    """How often the upstream served each of FILES."""
    got = dict.fromkeys(FILES, 0)
    for (_method, path), n in upstream.index.requests.items():
        name = path.rpartition("/")[2]
        if name in got:
            got[name] += n
    return got


def holds(bundle: Path, pem: bytes) -> bool:
    """Whether a PEM bundle holds this certificate."""
    return pem.strip() in bundle.read_bytes()


def fresh_copy(locked: Locked, where: Path) -> Locked:
    """The project as it was locked, in a directory of its own: without the environment
    locking made (pdm's and pipenv's .venv) or the file that points at it."""
    shutil.copytree(locked.project, where, ignore=shutil.ignore_patterns(".venv", ".pdm-python"))
    return Locked(locked.tool, where, where / locked.lock.name)


@pytest.mark.parametrize("install", sorted(INSTALLS))
async def test_a_lock_installs_through_the_transparent_face_unchanged_then_offline(
    install, wheelhouse, tmp_path
):
    tool, run_install = INSTALLS[install]
    async with https_upstream(small_index(wheelhouse), tmp_path / "upstream") as upstream:
        direct = client_env(tmp_path / "lock-home", trust=upstream.ca_file)
        locked = await lock_or_skip(tool, tmp_path / "locked", upstream.simple_url, direct)
        lock = locked.lock_bytes()
        assert upstream.origin.encode() in lock

        cache = tmp_path / "cache"
        # The proxy trusts the upstream's CA (its own environment, not the clients'). Pages
        # are never fresh (--page-ttl 0): the install with the upstream stopped gets them
        # stale, as one a day later would.
        trust = {"SSL_CERT_FILE": str(upstream.ca_file)}
        proxy = ProxyProcess(cache, upstream.simple_url, "--page-ttl", "0", env=trust)
        try:
            lines = await transparent_lines(proxy, cache, upstream.simple_url)
            assert lines["HTTPS_PROXY"] == proxy.url.removesuffix("/simple/")
            assert upstream.host not in lines["NO_PROXY"].split(",")
            # The clients trust the proxy's CA, never the upstream's: whatever they got came
            # through the proxy.
            assert not holds(Path(lines["SSL_CERT_FILE"]), upstream.ca.cert_pem.bytes())

            upstream.index.reset_counts()
            first = fresh_copy(locked, tmp_path / "first")
            try:
                got = await run_install(first, client_env(tmp_path / "home-1", extra=lines))
            except ClientMissing as exc:
                pytest.skip(str(exc))
            assert [name.lower() for name in got] == list(INSTALLED)
            assert first.lock_bytes() == lock, f"{install} changed {first.lock.name}"
            fetched = upstream_files(upstream)
            assert all(n >= 1 for n in fetched.values()), upstream.index.requests
            before = await counts_of(proxy)
            assert before.files_served() >= len(FILES), (before, proxy.log)
            assert not before.failed(), (before, proxy.log)

            await upstream.stop()
            second = fresh_copy(locked, tmp_path / "second")
            got = await run_install(second, client_env(tmp_path / "home-2", extra=lines))
            assert [name.lower() for name in got] == list(INSTALLED)
            assert second.lock_bytes() == lock, f"{install} changed {second.lock.name}"
            after = await counts_of(proxy)
            assert after.files_served() - before.files_served() >= len(FILES), after
            hits = after.file_outcomes.get("hit", 0) - before.file_outcomes.get("hit", 0)
            assert hits >= len(FILES), (after, proxy.log)
            assert not after.failed(), (after, proxy.log)
        finally:
            proxy.stop()

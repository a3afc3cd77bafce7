"""The lockfile fixtures work: each real client locks a project directly against the fake
upstream served over HTTPS (tests/fakes/https_upstream.py) and installs that lock directly, with
only the upstream's CA trusted. The tests of the transparent face build on exactly these locks
and installs, so a failure here is the fixture's, not the proxy's."""

from __future__ import annotations

import pytest

from tests.fakes.https_upstream import https_upstream
from tests.fakes.lockfiles import (
    INSTALLED,
    INSTALLS,
    ClientMissing,
    client_env,
    lock_or_skip,
    small_index,
)


@pytest.mark.parametrize("install", sorted(INSTALLS))
async def test_a_lock_made_against_the_https_upstream_installs_from_it(
    install, wheelhouse, tmp_path
):
    tool, run_install = INSTALLS[install]
    async with https_upstream(small_index(wheelhouse), tmp_path / "upstream") as upstream:
        env = client_env(tmp_path / "home", trust=upstream.ca_file)
        locked = await lock_or_skip(tool, tmp_path / "project", upstream.simple_url, env)
        lock = locked.lock_bytes()
        # The lock names the upstream, the way one made on a laptop names the public index.
        assert upstream.origin.encode() in lock
        upstream.index.reset_counts()
        try:
            got = await run_install(locked, env)
        except ClientMissing as exc:
            pytest.skip(str(exc))
        assert list(INSTALLED) == [name.lower() for name in got]
        assert upstream.file_requests() >= 2, upstream.index.requests
        assert locked.lock_bytes() == lock, f"{install} changed {locked.lock.name}"

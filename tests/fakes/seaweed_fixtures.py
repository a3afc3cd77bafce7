"""pytest fixtures for a real SeaweedFS: one server per session, a fresh bucket per test.

Load with `pytest_plugins = ("tests.fakes.seaweed_fixtures",)` in a test module."""

from __future__ import annotations

import os
import uuid

import pytest

from cacheproxy.config import SharedCacheSettings
from tests.fakes.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedServer, s3_client, start_seaweed


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory) -> SeaweedServer:
    try:
        server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}: CI installs it with the test extra")  # a skip would hide it
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
async def s3_bucket(seaweed) -> str:
    """A new, empty bucket for one test (names are 3-63 characters)."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    async with s3_client(seaweed.endpoint) as client:
        await client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def shared_settings(seaweed, s3_bucket) -> SharedCacheSettings:
    return SharedCacheSettings.from_url(
        f"s3://{s3_bucket}/fleet",
        {},
        endpoint=seaweed.endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )

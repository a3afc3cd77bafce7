"""Client authentication with tokens."""

import asyncio
import base64

import aiohttp
import pytest

from tests.fakes.clients import pip_install, uv_pip_install

TOKEN = "ci-token-123456"


async def status_of(url, **kwargs):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, **kwargs) as resp:
            return resp.status, resp.headers


@pytest.fixture
async def locked_proxy(make_proxy, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# one per line\n{TOKEN}\n")
    return await make_proxy(auth_tokens_file=tokens, auth_tokens=("second-token-42",))


async def test_requests_without_a_token_get_a_basic_challenge(locked_proxy):
    status, headers = await status_of(locked_proxy.url + "tinyalpha/")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Basic realm="cacheproxy"')
    bad = {"Authorization": aiohttp.encode_basic_auth("me", "wrong-token-000")}
    assert (await status_of(locked_proxy.url + "tinyalpha/", headers=bad))[0] == 401


async def test_tokens_from_file_list_and_bearer(locked_proxy):
    for token in (TOKEN, "second-token-42"):
        auth = {"Authorization": aiohttp.encode_basic_auth("anyone", token)}
        assert (await status_of(locked_proxy.url + "tinyalpha/", headers=auth))[0] == 200
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await status_of(locked_proxy.url + "tinyalpha/", headers=bearer))[0] == 200


async def test_health_stays_open(locked_proxy):
    assert (await status_of(locked_proxy.url.removesuffix("simple/") + "health"))[0] == 200
    assert (await status_of(locked_proxy.url.removesuffix("simple/") + "metrics"))[0] == 401


@pytest.mark.parametrize("install", [pip_install, uv_pip_install])
async def test_installers_authenticate_with_the_index_url(locked_proxy, tmp_path, install):
    url = locked_proxy.url.replace("http://", f"http://ci:{TOKEN}@")
    (await install(url, tmp_path / "t", "tinyalpha==2.0")).assert_ok()
    assert (await install(locked_proxy.url, tmp_path / "u", "tinyalpha==2.0")).returncode != 0


@pytest.mark.parametrize(
    "credentials",
    [
        b"Basic " + "jos\xe9:s\xe9cret".encode("latin-1"),  # latin-1 bytes where base64 goes
        b"Basic " + base64.b64encode("jos\xe9:s\xe9cret-tok\xe9n".encode("latin-1")),
        b"Bearer t\xf6ken-\xff\xfe-123",
    ],
)
async def test_non_utf8_authorization_is_a_401(locked_proxy, credentials):
    host, port = locked_proxy.server.host, locked_proxy.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"GET /simple/tinyalpha/ HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n"
        b"Authorization: " + credentials + b"\r\n\r\n"
    )
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 401 Unauthorized", answer[:200]
    assert rest.endswith((b"\r\n\r\nunknown token\n", b"\r\n\r\ncredentials required\n"))

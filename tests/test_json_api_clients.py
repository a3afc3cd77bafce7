"""pip-compile --generate-hashes through the proxy reads hashes from the JSON API instead of
downloading every file of a release to hash it (it hashes every platform's files, so without
the API a small compile downloads hundreds of files)."""

from __future__ import annotations

import dataclasses

from tests.fakes.upstream import UpstreamIndex
from tests.test_client_matrix import WHEELS, client, pip_tools_compile

# Files of tinyalpha 2.0 for other platforms: never installed here, hashed all the same.
OTHER_PLATFORMS = ("cp312-cp312-win_amd64", "cp312-cp312-macosx_11_0_arm64", "py2-none-any")


def add_platform_files(index: UpstreamIndex) -> list[str]:
    universal = index.files[WHEELS[0]]
    names = []
    for number, tag in enumerate(OTHER_PLATFORMS):
        name = WHEELS[0].replace("py3-none-any", tag)
        # Bytes of their own, so each has its own hash; never unpacked by the client.
        data = universal.data + bytes([number])
        index.files[name] = dataclasses.replace(universal, filename=name, data=data)
        names.append(name)
    return names


def downloads(index: UpstreamIndex) -> set[str]:
    """Whole files fetched from the upstream (metadata files aside)."""
    return {name for name in index.files if index.file_hits(name)}


async def test_pip_compile_generate_hashes_downloads_only_what_it_installs(
    make_proxy, upstream, tmp_path
):
    pip_compile = client("pip-tools", "pip-compile")
    others = add_platform_files(upstream.index)
    release = {
        f.sha256 for f in upstream.index.files.values() if f.filename.startswith("tinyalpha-2.0")
    }
    assert len(release) == 4
    for work in ("with-api", "without-api"):
        (tmp_path / work).mkdir()
    proxy = await make_proxy()
    pinned = await pip_tools_compile(pip_compile, proxy.url, tmp_path / "with-api")
    assert pinned["tinyalpha==2.0"] == release
    assert pinned["beta-helper==1.0"] == {upstream.index.files[WHEELS[1]].sha256}
    # Nothing but what an install of the result would fetch (PEP 658 metadata spares even
    # those here), and the hashes came from one JSON API document per project.
    assert downloads(upstream.index) <= set(WHEELS)
    json_requests = {path for (_, path) in upstream.index.requests if path.endswith("/json")}
    assert json_requests == {"/pypi/tinyalpha/json", "/pypi/beta-helper/json"}

    # The same compile where the upstream has no JSON API: every file of the release is
    # downloaded to be hashed. This is what the API spares.
    upstream.index.reset_counts()
    bare = await make_proxy(json_api_url="off", cache_dir=tmp_path / "cache-without-api")
    pinned = await pip_tools_compile(pip_compile, bare.url, tmp_path / "without-api")
    assert pinned["tinyalpha==2.0"] == release
    assert set(others) <= downloads(upstream.index)

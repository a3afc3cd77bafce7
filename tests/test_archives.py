"""Whole archives pass; archives cut short, damaged or not archives at all get a reason."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import struct
import tarfile

import pytest

from cacheproxy.protocol import archives
from cacheproxy.protocol.archives import check_archive
from tests.fakes.wheels import build_wheel
from tests.fakes.zips import streamed_zip_bytes, zip64_everywhere, zip_bytes

MEMBERS = {
    "demo/__init__.py": b"x = 1\n",
    "demo/data.bin": random.Random(3).randbytes(50_000),
    "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n\n",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> bytes:
    path = build_wheel(tmp_path_factory.mktemp("w"), "demo", "1.0", payload_size=200_000)
    return path.read_bytes()


def write(tmp_path, filename: str, data: bytes) -> str:
    path = tmp_path / filename
    path.write_bytes(data)
    return str(path)


def tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in MEMBERS.items():
            info = tarfile.TarInfo(f"demo-1.0/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def directory_start(blob: bytes) -> int:
    return struct.unpack_from("<I", blob, blob.rfind(b"PK\x05\x06") + 16)[0]


@pytest.mark.parametrize(
    "blob",
    [
        zip_bytes(MEMBERS),
        zip_bytes(MEMBERS, comment=b"a comment"),
        zip64_everywhere(MEMBERS),
        streamed_zip_bytes(MEMBERS),
        zip_bytes({}),
    ],
    ids=["deflated", "comment", "zip64", "data-descriptors", "empty-zip"],
)
def test_whole_zips_pass(tmp_path, blob):
    assert check_archive(write(tmp_path, "demo-1.0-py3-none-any.whl", blob), "x.whl") is None
    assert check_archive(write(tmp_path, "demo-1.0.zip", blob), "demo-1.0.ZIP") is None


def test_a_whole_wheel_passes(tmp_path, wheel):
    path = write(tmp_path, "demo-1.0-py3-none-any.whl", wheel)
    assert check_archive(path, "demo-1.0-py3-none-any.whl") is None


@pytest.mark.parametrize(
    "cut",
    [
        lambda blob: len(blob) - 1,
        lambda blob: len(blob) - 22,  # exactly the end record missing
        lambda blob: directory_start(blob) + 60,  # inside the central directory
        lambda blob: directory_start(blob),
        lambda blob: len(blob) // 2,
        lambda blob: 100,
        lambda blob: 0,
    ],
    ids=["last-byte", "end-record", "inside-directory", "before-directory", "half", "100", "0"],
)
def test_cut_wheels_get_a_reason(tmp_path, wheel, cut):
    path = write(tmp_path, "demo-1.0-py3-none-any.whl", wheel[: cut(wheel)])
    reason = check_archive(path, "demo-1.0-py3-none-any.whl")
    assert reason is not None
    assert reason.startswith("not a whole zip")
    assert "\n" not in reason


def test_a_zip_missing_bytes_in_its_middle_gets_a_reason(tmp_path, wheel):
    start = directory_start(wheel)
    holed = wheel[: start - 1000] + wheel[start - 900 :]  # end records intact, offsets now wrong
    reason = check_archive(write(tmp_path, "d.whl", holed), "d.whl")
    assert reason is not None and "central directory" in reason


def test_a_directory_entry_pointing_past_the_data_gets_a_reason(tmp_path):
    blob = bytearray(zip_bytes(MEMBERS))
    struct.pack_into("<I", blob, directory_start(blob) + 42, len(blob) - 10)
    reason = check_archive(write(tmp_path, "d.whl", bytes(blob)), "d.whl")
    assert reason is not None and "overlaps the central directory" in reason


@pytest.mark.parametrize("filename", ["g.whl", "g.tar.gz", "g.tgz", "g.tar.bz2", "g.tar.xz"])
def test_garbage_and_empty_files_get_a_reason(tmp_path, filename):
    garbage = random.Random(4).randbytes(70_000)
    assert check_archive(write(tmp_path, filename, garbage), filename)
    assert check_archive(write(tmp_path, filename, b""), filename)


COMPRESSORS = {
    "demo-1.0.tar.gz": gzip.compress,
    "demo-1.0.tgz": gzip.compress,
    "demo-1.0.tar.bz2": bz2.compress,
    "demo-1.0.tar.xz": lzma.compress,
}


@pytest.mark.parametrize("filename", COMPRESSORS)
def test_whole_compressed_tarballs_pass(tmp_path, filename):
    data = COMPRESSORS[filename](tarball())
    assert check_archive(write(tmp_path, filename, data), filename) is None


@pytest.mark.parametrize("filename", COMPRESSORS)
@pytest.mark.parametrize("keep", [0.99, 0.5, 0.1])
def test_cut_compressed_tarballs_get_a_reason(tmp_path, filename, keep):
    data = COMPRESSORS[filename](tarball())
    reason = check_archive(write(tmp_path, filename, data[: int(len(data) * keep)]), filename)
    assert reason is not None and "\n" not in reason


def test_a_gzip_without_its_last_trailer_byte_or_with_a_bad_crc_gets_a_reason(tmp_path):
    data = gzip.compress(tarball())
    assert "cut short" in check_archive(write(tmp_path, "a.tar.gz", data[:-1]), "a.tar.gz")
    bad_crc = data[:-8] + bytes([data[-8] ^ 1]) + data[-7:]
    assert "CRC" in check_archive(write(tmp_path, "b.tar.gz", bad_crc), "b.tar.gz")


def test_a_gzip_of_several_members_passes(tmp_path):
    data = tarball()
    joined = gzip.compress(data[:5000]) + gzip.compress(data[5000:])
    assert check_archive(write(tmp_path, "a.tar.gz", joined), "a.tar.gz") is None


def test_a_bzip2_that_expands_past_the_bound_is_not_passed(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "_MIN_OUTPUT_BOUND", 1024 * 1024)
    data = bz2.compress(b"\0" * (8 * 1024 * 1024))
    reason = check_archive(write(tmp_path, "z.tar.bz2", data), "z.tar.bz2")
    assert reason is not None and "expands past" in reason


@pytest.mark.parametrize("filename", ["demo-1.0.tar", "demo-1.0.egg", "demo-1.0.exe", "README"])
def test_other_kinds_are_not_checked(tmp_path, filename):
    assert check_archive(write(tmp_path, filename, b"anything"), filename) is None


def test_a_missing_file_gets_a_reason(tmp_path):
    reason = check_archive(tmp_path / "gone.whl", "gone.whl")
    assert reason is not None and reason.startswith("cannot read")

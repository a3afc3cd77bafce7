"""METADATA read from byte ranges of a wheel: what the reader asks for, and what it refuses."""

from __future__ import annotations

import io
import random
import struct
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cacheproxy.errors import UnreadableZip
from cacheproxy.protocol.wheel_tail import TailMetadataReader
from tests.fakes.wheels import build_wheel, metadata_of, metadata_text
from tests.fakes.zips import (
    patch_central_entry,
    patch_end_record,
    streamed_zip_bytes,
    zip64_everywhere,
    zip_bytes,
)

FILENAME = "demo-1.0-py3-none-any.whl"
METADATA = metadata_text("demo", "1.0", requires=["other>=2"])
MEMBER = "demo-1.0.dist-info/METADATA"


def read_ranges(blob: bytes, filename: str = FILENAME, **options):
    """Drive the reader over a bytes object, as a caller does over HTTP ranges."""
    reader = TailMetadataReader(filename, len(blob), **options)
    reader.rounds = 0  # round trips: the ranges of one are fetched together
    while (want := reader.next_range()) is not None:
        reader.rounds += 1
        for start, end in filter(None, [reader.alongside()]):
            assert 0 <= start < end <= len(blob)
            reader.feed_alongside(start, blob[start:end])
        start, end = want
        assert 0 <= start < end <= len(blob)
        reader.feed(start, blob[start:end])
    assert reader.requested_bytes <= reader.max_requested_bytes
    return reader.result(), reader


def wheel_members(metadata: bytes = METADATA, **extra: bytes) -> dict[str, bytes]:
    return {"demo/__init__.py": b"x = 1\n", MEMBER: metadata, **extra}


def zipfile_metadata(blob: bytes, member: str = MEMBER) -> bytes:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return archive.read(member)


def directory_size(blob: bytes) -> int:
    """The central directory and the end records after it."""
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return len(blob) - archive.start_dir


def test_small_deflated_wheel_is_read_from_the_tail_alone(tmp_path):
    wheel = build_wheel(tmp_path, "Demo.Pkg", "1.0", requires=["a>=1"])
    metadata, reader = read_ranges(wheel.read_bytes(), wheel.name)
    assert metadata == metadata_of(wheel)
    assert reader.requests == 1
    assert reader.requested_bytes <= 16 * 1024  # a small wheel's tail, not 64 KiB of it
    assert reader.member == "demo_pkg-1.0.dist-info/METADATA"


def test_stored_metadata():
    blob = zip_bytes(wheel_members(), method=zipfile.ZIP_STORED)
    assert read_ranges(blob)[0] == METADATA


def test_big_wheel_costs_two_small_requests(tmp_path):
    wheel = build_wheel(tmp_path, "bigpkg", "2.0", payload_size=6 * 1024 * 1024)
    blob = wheel.read_bytes()
    metadata, reader = read_ranges(blob, wheel.name)
    assert metadata == metadata_of(wheel)
    assert reader.requests == 2
    assert reader.requested_bytes < 100 * 1024


def test_local_headers_with_zip64_extra_fields_the_directory_lacks():
    blob = zip_bytes(wheel_members(payload=random.Random(0).randbytes(300_000)), force_zip64=True)
    metadata, reader = read_ranges(blob)
    assert metadata == zipfile_metadata(blob) == METADATA
    assert reader.requests == 2


def test_zip64_sizes_offsets_and_end_record():
    blob = zip64_everywhere(wheel_members(payload=random.Random(0).randbytes(200_000)))
    assert zipfile_metadata(blob) == METADATA  # the hand-made zip is one zipfile reads
    assert read_ranges(blob)[0] == METADATA
    assert read_ranges(blob, tail_guess=100)[0] == METADATA


def test_more_than_65535_entries_uses_the_zip64_end_record():
    members = {f"demo/m{i}.py": b"" for i in range(66_000)} | wheel_members()
    blob = zip_bytes(members, method=zipfile.ZIP_STORED)
    metadata, reader = read_ranges(blob, tail_guess=4096)
    assert metadata == METADATA
    # The tail, the rest of the directory (megabytes: nothing reached back for), METADATA.
    assert reader.requests == 3
    assert reader.rounds == 2
    assert reader.requested_bytes < directory_size(blob) + 4096 + 8 * 1024


def test_data_descriptors_take_sizes_from_the_directory():
    blob = streamed_zip_bytes(wheel_members(payload=random.Random(0).randbytes(100_000)))
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        assert all(info.flag_bits & 0x08 for info in archive.infolist())
    assert read_ranges(blob)[0] == zipfile_metadata(blob) == METADATA


@pytest.mark.parametrize("tail_guess", [64 * 1024, 2048, 22])
def test_comments_even_ones_that_hold_a_fake_end_record(tail_guess):
    comment = b"PK\x05\x06" + b"\x00" * 30 + bytes(range(256)) * 200
    blob = zip_bytes(wheel_members(), comment=comment[:65535])
    assert read_ranges(blob, tail_guess=tail_guess)[0] == METADATA


def test_a_tail_smaller_than_a_small_directory_asks_for_it_with_the_dist_info_before_it():
    modules = {f"demo/module_{i}.py": b"pass\n" for i in range(200)}
    blob = zip_bytes(modules | wheel_members())
    metadata, reader = read_ranges(blob, tail_guess=1024)
    assert metadata == METADATA
    assert reader.requests == 2

    # METADATA far from the directory (written first): one more request, still right.
    blob = zip_bytes(
        {MEMBER: METADATA, "demo/payload": random.Random(1).randbytes(300_000)} | modules
    )
    metadata, reader = read_ranges(blob, tail_guess=1024)
    assert metadata == METADATA
    assert reader.requests == 3


def test_a_large_directory_is_read_without_the_record_before_it():
    # RECORD lists every file, so reaching back for METADATA past it would cost about a
    # second directory's worth of bytes: the rest of the directory, then METADATA alone.
    modules = {f"demo/module_{i}.py": b"pass\n" for i in range(2000)}
    record = "".join(f"{name},sha256={'x' * 43},5\n" for name in modules).encode()
    members = modules | {MEMBER: METADATA, "demo_pkg-1.0.dist-info/RECORD": record}
    blob = zip_bytes(members)
    metadata, reader = read_ranges(blob, tail_guess=1024)
    assert metadata == METADATA
    assert reader.requests == 3
    assert reader.rounds == 2  # METADATA fetched beside the rest of the directory
    assert reader.requested_bytes < directory_size(blob) + 1024 + len(METADATA) + 4096


def test_a_wrong_guess_of_where_metadata_lies_costs_a_round_trip_not_the_answer():
    # The directory's last entries list another version's METADATA of the same project: the
    # guess. The whole directory also lists this version's own, which is the one read.
    modules = {f"demo/module_{i}.py": b"pass\n" for i in range(2000)}
    other = metadata_text("demo", "0.9")
    blob = zip_bytes({MEMBER: METADATA} | modules | {"demo-0.9.dist-info/METADATA": other})
    metadata, reader = read_ranges(blob, tail_guess=1024)
    assert metadata == METADATA
    assert (reader.requests, reader.rounds) == (4, 3)


def test_a_prepended_stub_shifts_every_offset():
    blob = b"#!/bin/sh\nexit 0\n" * 10 + zip_bytes(wheel_members())
    assert read_ranges(blob)[0] == zipfile_metadata(blob) == METADATA


def test_an_unnormalised_dist_info_name_is_the_wheels_own():
    blob = zip_bytes({"Demo-1.0.0.dist-info/METADATA": METADATA, "demo/x.py": b""})
    assert read_ranges(blob)[0] == METADATA


def test_the_only_dist_info_of_the_project_is_taken_when_its_version_differs():
    blob = zip_bytes({"demo-1.0rc0.dist-info/METADATA": METADATA})
    assert read_ranges(blob)[0] == METADATA


def test_the_exact_dist_info_wins_over_others_and_nested_ones():
    blob = zip_bytes(
        {
            "demo-0.9.dist-info/METADATA": b"old",
            "vendored/demo-1.0.dist-info/METADATA": b"nested",
            MEMBER: METADATA,
        }
    )
    assert read_ranges(blob)[0] == METADATA


def refused(blob: bytes, filename: str = FILENAME, **options) -> str:
    with pytest.raises(UnreadableZip) as caught:
        read_ranges(blob, filename, **options)
    return str(caught.value)


BASE = zip_bytes(wheel_members(payload=random.Random(1).randbytes(200_000)))


@pytest.mark.parametrize(
    "members",
    [
        {"demo/__init__.py": b""},
        {"other-1.0.dist-info/METADATA": METADATA},
        {"demo-2.0.dist-info/METADATA": METADATA, "demo-3.0.dist-info/METADATA": METADATA},
        {MEMBER: METADATA, "Demo-1.0.dist-info/METADATA": METADATA},
    ],
    ids=["no-metadata", "another-project", "two-other-versions", "two-exact"],
)
def test_no_single_metadata_of_the_wheels_own_is_refused(members):
    assert "METADATA files" in refused(zip_bytes(members))


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "too short"),
        (b"not a zip at all", "too short"),
        (random.Random(2).randbytes(100_000), "no end-of-central-directory"),
        (BASE[:-1], "no end-of-central-directory"),
        (BASE[: len(BASE) // 2], "no end-of-central-directory"),
        (BASE[200:], "does not fit"),
        (BASE.replace(b"PK\x01\x02", b"PK\x01\x09", 1), "entry signature"),
        (patch_end_record(BASE, offset=0x7FFFFFFF), "does not fit"),
        (patch_end_record(BASE, size=0xFFFFFFF0), "exceeds"),
        (patch_end_record(BASE, entries=60_000), "cannot fit"),
        (patch_end_record(BASE, disk=1), "several disks"),
        (patch_central_entry(BASE, MEMBER, size=1 << 30), "over the bound"),
        (patch_central_entry(BASE, MEMBER, compressed=1 << 30), "overlaps"),
        (patch_central_entry(BASE, MEMBER, offset=0x7FFFFFF0), "overlaps"),
        (patch_central_entry(BASE, MEMBER, offset=0), "local header"),
        (patch_central_entry(BASE, MEMBER, crc=0), "CRC-32"),
        (patch_central_entry(BASE, MEMBER, size=10), "past its declared"),
        (patch_central_entry(BASE, MEMBER, method=12), "compression method"),
        (patch_central_entry(BASE, MEMBER, flags=1), "encrypted"),
        (zip_bytes(wheel_members(), method=zipfile.ZIP_BZIP2), "compression method"),
    ],
)
def test_damaged_and_hostile_zips_are_refused(blob, reason):
    assert reason in refused(blob)


def test_a_deflate_bomb_stops_at_the_declared_size():
    bomb = zip_bytes({MEMBER: b"\0" * (64 * 1024 * 1024)})
    assert len(bomb) < 100 * 1024
    assert "over the bound" in refused(bomb)
    lying = patch_central_entry(bomb, MEMBER, size=len(METADATA))
    assert "past its declared" in refused(lying)


def test_a_deflate_stream_cut_short_is_refused():
    with zipfile.ZipFile(io.BytesIO(BASE)) as archive:
        compressed = archive.getinfo(MEMBER).compress_size
    cut = patch_central_entry(BASE, MEMBER, compressed=compressed - 5)
    assert "deflate stream ends early" in refused(cut)


def test_the_bound_is_respected_with_a_small_directory_limit():
    members = {f"demo/module_{i}.py": b"" for i in range(500)} | wheel_members()
    assert "exceeds" in refused(zip_bytes(members), max_directory=1024)


def test_short_answers_and_bad_filenames_are_refused():
    reader = TailMetadataReader(FILENAME, len(BASE))
    start, end = reader.next_range()
    with pytest.raises(UnreadableZip, match="asked for bytes"):
        reader.feed(start, BASE[start : end - 1])
    with pytest.raises(UnreadableZip):
        reader.result()
    with pytest.raises(UnreadableZip):
        TailMetadataReader("not-a-wheel.tar.gz", 100)


def test_an_upstream_that_sends_the_whole_file_answers_in_one_round():
    reader = TailMetadataReader(FILENAME, len(BASE))
    assert reader.next_range() is not None
    reader.feed(0, BASE)  # a server that ignores Range
    assert reader.next_range() is None
    assert reader.result() == METADATA


def test_a_huge_declared_metadata_is_refused_from_the_tail_alone():
    blob = patch_central_entry(BASE, MEMBER, size=1 << 30)
    reader = TailMetadataReader(FILENAME, len(blob))
    start, end = reader.next_range()
    reader.feed(start, blob[start:end])
    with pytest.raises(UnreadableZip, match="over the bound"):
        reader.next_range()
    assert reader.requests == 1


def test_feed_without_a_request_is_a_programming_error():
    with pytest.raises(RuntimeError):
        TailMetadataReader(FILENAME, len(BASE)).feed(0, b"")


def mutate(blob: bytes, changes: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(blob[: max(0, len(blob) - cut)])
    for position, value in changes:
        if out:
            out[position % len(out)] = value
    return bytes(out)


FUZZ_BASE = zip_bytes(wheel_members(), force_zip64=True)
# From the start of the central directory to the end: where the numbers are.
TAIL = len(FUZZ_BASE) - struct.unpack_from("<I", FUZZ_BASE, FUZZ_BASE.rfind(b"PK\x05\x06") + 16)[0]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6),
    in_directory=st.booleans(),
    cut=st.sampled_from([0, 0, 0, 1, 7, 30]),
    tail_guess=st.sampled_from([22, 100, 64 * 1024]),
)
def test_mutated_zips_only_ever_raise_unreadable_zip(changes, in_directory, cut, tail_guess):
    if in_directory:
        changes = [(len(FUZZ_BASE) - 1 - position % TAIL, value) for position, value in changes]
    blob = mutate(FUZZ_BASE, changes, cut)
    reader = TailMetadataReader(FILENAME, len(blob), tail_guess=tail_guess)
    try:
        while (want := reader.next_range()) is not None:
            start, end = want
            assert 0 <= start < end <= len(blob)
            reader.feed(start, blob[start:end])
        assert isinstance(reader.result(), bytes)
    except UnreadableZip:
        pass
    assert reader.requested_bytes <= reader.max_requested_bytes
    assert reader.requests <= 8


LARGE_DIRECTORY = zip_bytes({f"demo/m{i}.py": b"" for i in range(1500)} | wheel_members())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), min_size=1, max_size=6)
)
def test_mutated_entries_where_metadata_is_guessed_only_ever_raise_unreadable_zip(changes):
    # Bytes changed among the directory's last entries, which the guess reads.
    end = LARGE_DIRECTORY.rfind(b"PK\x05\x06")
    blob = mutate(LARGE_DIRECTORY, [(end - 1 - p, v) for p, v in changes], cut=0)
    try:
        metadata, reader = read_ranges(blob, tail_guess=2048)
        assert metadata == METADATA
    except UnreadableZip:
        return
    assert reader.requests <= 9

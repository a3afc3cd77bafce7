"""Real, installable wheels built on the spot, so tests need no index of their own."""

from __future__ import annotations

import base64
import hashlib
import random
import zipfile
from collections.abc import Sequence
from pathlib import Path

from packaging.utils import canonicalize_name

_EPOCH = (2024, 1, 1, 0, 0, 0)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def metadata_text(
    name: str, version: str, requires: Sequence[str] = (), requires_python: str | None = None
) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    return ("\n".join(lines) + "\n\n").encode()


def build_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    *,
    requires: Sequence[str] = (),
    requires_python: str | None = None,
    payload_size: int = 0,
) -> Path:
    """A deterministic py3-none-any wheel with an importable module named after the project.
    payload_size adds that many incompressible bytes, for large-file tests."""
    dist = canonicalize_name(name).replace("-", "_")
    dist_info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {
        f"{dist}/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{dist_info}/METADATA": metadata_text(name, version, requires, requires_python),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: cacheproxy-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n\n"
        ),
    }
    if payload_size:
        files[f"{dist}/payload.bin"] = random.Random(f"{name}{version}").randbytes(payload_size)
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for arcname, data in files.items():
            info = zipfile.ZipInfo(arcname, _EPOCH)
            info.compress_type = (
                zipfile.ZIP_STORED if arcname.endswith(".bin") else zipfile.ZIP_DEFLATED
            )
            archive.writestr(info, data)
    return path


def metadata_of(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name)

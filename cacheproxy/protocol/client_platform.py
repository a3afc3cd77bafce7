"""The platform a client runs on, read from its User-Agent, and which wheel it would pick.

pip and uv send a linehaul JSON object after their name and version (`pip/24.0 {...}`) with
the Python version, implementation, system, CPU and libc. From it come the environment that
PEP 508 markers are evaluated in and the wheel tags the client accepts, best first, so the
proxy can guess which wheel of a release the client will ask about. Pure: no I/O.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

# The oldest glibc and musl minor versions manylinux and musllinux tags go down to.
_OLDEST_GLIBC_MINOR = 5
_OLDEST_MUSL_MINOR = 1
# manylinux tags older than PEP 600, with the glibc each stands for.
_LEGACY_MANYLINUX = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
_WINDOWS_CPUS = {"amd64": "win_amd64", "x86_64": "win_amd64", "arm64": "win_arm64"}
_MARKER_SYSTEMS = {"Linux": "linux", "Windows": "win32", "Darwin": "darwin"}
# A client that says nothing of its platform: only wheels that run anywhere.
_PURE_TAGS = tuple(compatible_tags((3,), "py3", ["any"]))


@dataclass(frozen=True)
class ClientPlatform:
    """What a resolution on this client evaluates markers in and which wheels it accepts."""

    # PEP 508 marker environment; None when the client did not say (markers then unknown).
    environment: dict[str, str] | None
    tags: tuple[Tag, ...]  # best first

    @property
    def python_version(self) -> str | None:
        return self.environment["python_full_version"] if self.environment else None

    @functools.cached_property
    def _rank(self) -> dict[Tag, int]:
        return {tag: index for index, tag in enumerate(self.tags)}

    def best_wheel(self, filenames: Iterable[str]) -> str | None:
        """The wheel the client prefers among these, None when it accepts none of them."""
        rank = self._rank
        best: tuple[int, str] | None = None
        for filename in filenames:
            try:
                tags = parse_wheel_filename(filename)[3]
            except InvalidWheelFilename:
                continue
            ranks = [rank[tag] for tag in tags if tag in rank]
            if ranks and (best is None or min(ranks) < best[0]):
                best = (min(ranks), filename)
        return best and best[1]


UNKNOWN = ClientPlatform(None, _PURE_TAGS)


def linehaul(user_agent: str | None) -> dict | None:
    """The JSON object after the installer's name, or None."""
    if not user_agent or "{" not in user_agent:
        return None
    try:
        data = json.loads(user_agent[user_agent.index("{") :])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# A build runs a handful of client versions on a handful of platforms, and each page served
# asks again: a few hundred tags, made once per User-Agent.
@functools.lru_cache(maxsize=64)
def client_platform(user_agent: str | None) -> ClientPlatform:
    """The client's platform as its User-Agent tells it; UNKNOWN when it does not."""
    data = linehaul(user_agent)
    try:
        return _from_linehaul(data) if data else UNKNOWN
    except (KeyError, TypeError, ValueError, AttributeError):
        return UNKNOWN


def _from_linehaul(data: dict) -> ClientPlatform:
    python = str(data["python"])
    version = tuple(int(part) for part in python.split(".")[:2])
    if len(version) != 2:
        raise ValueError("no minor version")
    implementation = (data.get("implementation") or {}).get("name") or "CPython"
    system = (data.get("system") or {}).get("name") or ""
    cpu = str(data.get("cpu") or "")
    platforms = _platforms(system, cpu, data.get("distro") or {})
    tags: list[Tag] = []
    if implementation == "CPython" and platforms:
        abi = f"cp{version[0]}{version[1]}"
        tags += cpython_tags(version, [abi], platforms)
    interpreter = f"cp{version[0]}{version[1]}" if implementation == "CPython" else None
    tags += compatible_tags(version, interpreter, platforms or ["any"])
    return ClientPlatform(_environment(python, implementation, system, cpu, data), tuple(tags))


def _platforms(system: str, cpu: str, distro: dict) -> list[str]:
    """Platform tags best first; empty when the system is one this does not know."""
    if system == "Linux" and cpu:
        libc = distro.get("libc") or {}
        major, minor = (int(part) for part in str(libc.get("version", "0.0")).split(".")[:2])
        if libc.get("lib") == "musl":
            musl = range(minor, _OLDEST_MUSL_MINOR - 1, -1)
            return [f"musllinux_{major}_{m}_{cpu}" for m in musl] + [f"linux_{cpu}"]
        return [*_manylinux(major, minor, cpu), f"linux_{cpu}"]
    if system == "Windows":
        known = _WINDOWS_CPUS.get(cpu.lower())
        return [known] if known else ["win32"]
    if system == "Darwin" and distro.get("version"):
        mac = tuple(int(part) for part in str(distro["version"]).split(".")[:2])
        mac = (mac[0], mac[1] if len(mac) > 1 and mac[0] == 10 else 0)
        return list(mac_platforms(mac, "arm64" if cpu in ("arm64", "aarch64") else cpu))
    return []


def _manylinux(major: int, minor: int, cpu: str) -> Sequence[str]:
    if major != 2:
        return []
    names = []
    for glibc in range(minor, _OLDEST_GLIBC_MINOR - 1, -1):
        names.append(f"manylinux_2_{glibc}_{cpu}")
        legacy = _LEGACY_MANYLINUX.get((2, glibc))
        if legacy:
            names.append(f"{legacy}_{cpu}")
    return names


def _environment(python: str, implementation: str, system: str, cpu: str, data: dict) -> dict:
    """The PEP 508 marker environment, as far as the linehaul tells it."""
    major_minor = ".".join(python.split(".")[:2])
    release = str((data.get("system") or {}).get("release") or "")
    return {
        "implementation_name": implementation.lower(),
        "implementation_version": str((data.get("implementation") or {}).get("version", python)),
        "os_name": "nt" if system == "Windows" else "posix",
        "platform_machine": cpu,
        "platform_release": release,
        "platform_system": system,
        "platform_version": "",
        "python_full_version": python,
        "platform_python_implementation": implementation,
        "python_version": major_minor,
        "sys_platform": _MARKER_SYSTEMS.get(system, system.lower()),
    }

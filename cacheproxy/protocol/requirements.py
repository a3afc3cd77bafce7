"""What a resolver will look at next: the release it picks from a page, the dependencies a
wheel's METADATA declares. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from cacheproxy.protocol.client_platform import ClientPlatform

ANY_VERSION = SpecifierSet()


@dataclass(frozen=True)
class Dependency:
    project: NormalizedName
    specifier: SpecifierSet


def likely_wheel(
    files: Mapping[str, dict[str, Any]],
    specifier: SpecifierSet,
    platform: ClientPlatform,
    first: bool = False,
) -> str | None:
    """The wheel a resolver most likely asks about: of the newest final release that the
    specifier admits and that has a wheel for this platform (not yanked, its requires-python
    met), the best wheel. None when no release has one. first: the release's first wheel by
    name, whatever its platform, as a resolver for every platform (uv lock) asks.

    files maps each file name to its entry. A page can list thousands of files: releases are
    told apart by file name alone, and entries are looked at only for the newest releases,
    until one has a wheel that fits; each version and requires-python is judged once."""
    releases: dict[str, list[str]] = {}
    for filename in files:
        if filename.endswith(".whl") and filename.count("-") in (4, 5):
            releases.setdefault(filename.split("-", 2)[1], []).append(filename)
    by_version: dict[Version, list[str]] = {}
    for text, filenames in releases.items():
        version = _version(text)
        if version is not None and not version.is_prerelease:
            by_version.setdefault(version, []).extend(filenames)  # "1.0" and "1.0.0" are one
    fits: dict[str, bool] = {}
    for version in _newest_first(by_version):
        if not specifier.contains(version, prereleases=False):
            continue
        usable = []
        for filename in by_version[version]:
            entry = files[filename]
            requires_python = str(entry.get("requires-python") or "")
            if requires_python not in fits:
                fits[requires_python] = _python_fits(requires_python, platform.python_version)
            if fits[requires_python] and not entry.get("yanked"):
                usable.append(filename)
        best = (min(usable) if usable else None) if first else platform.best_wheel(usable)
        if best is not None:
            return best
    return None


def wheel_pick(filenames: Iterable[str], wheel: str, platform: ClientPlatform) -> str | None:
    """How a client that asks for this wheel's metadata picks wheels: "first", its release's
    first wheel by name where there is a better one for its platform; "platform", the best
    one for its platform where that is not the first; None when this wheel does not tell."""
    prefix = "-".join(wheel.split("-")[:2]) + "-"
    release = [name for name in filenames if name.startswith(prefix) and name.endswith(".whl")]
    if wheel not in release:
        return None
    first, best = min(release), platform.best_wheel(release)
    if first == best:
        return None
    return "first" if wheel == first else "platform" if wheel == best else None


def _newest_first(versions: Iterable[Version]) -> Iterator[Version]:
    """The newest first, then the rest newest first: the newest release usually fits, and
    finding it alone takes one comparison per release where a sort takes a dozen."""
    newest = max(versions, default=None)
    if newest is None:
        return
    yield newest
    yield from sorted((v for v in versions if v != newest), reverse=True)


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _python_fits(requires_python: str, python: str | None) -> bool:
    if not requires_python or python is None:
        return True
    try:
        return SpecifierSet(requires_python).contains(python, prereleases=True)
    except InvalidSpecifier:
        return True  # a resolver that cannot read it does not hold it against the file


def dependencies(metadata: bytes, platform: ClientPlatform) -> list[Dependency]:
    """The Requires-Dist of a METADATA file that apply on this platform with no extras asked
    for; requirements with markers are left out when the platform is not known."""
    raw, _ = parse_email(metadata)
    found: dict[NormalizedName, Dependency] = {}
    for line in raw.get("requires_dist", []):
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.url or not _applies(requirement, platform):
            continue
        name = canonicalize_name(requirement.name)
        found.setdefault(name, Dependency(name, requirement.specifier))
    return list(found.values())


def _applies(requirement: Requirement, platform: ClientPlatform) -> bool:
    if requirement.marker is None:
        return True
    if platform.environment is None:
        return False
    try:
        return requirement.marker.evaluate({**platform.environment, "extra": ""})
    except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
        return False

"""What a resolver will look at next: the release it picks from a page, the dependencies a
wheel's METADATA declares. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import Version

from cacheproxy.simple.client_platform import ClientPlatform

ANY_VERSION = SpecifierSet()


@dataclass(frozen=True)
class Dependency:
    project: NormalizedName
    specifier: SpecifierSet


def likely_wheel(
    files: Iterable[dict[str, Any]], specifier: SpecifierSet, platform: ClientPlatform
) -> str | None:
    """The wheel a resolver most likely asks about: of the newest final release that the
    specifier admits and that has a wheel for this platform (not yanked, its requires-python
    met), the best wheel. None when no release has one."""
    by_version: dict[Version, list[str]] = {}
    for entry in files:
        filename = entry.get("filename", "")
        if not filename.endswith(".whl") or entry.get("yanked"):
            continue
        if not _python_fits(entry.get("requires-python"), platform.python_version):
            continue
        try:
            version = parse_wheel_filename(filename)[1]
        except InvalidWheelFilename:
            continue
        if version.is_prerelease or not specifier.contains(version, prereleases=False):
            continue
        by_version.setdefault(version, []).append(filename)
    for version in sorted(by_version, reverse=True):
        best = platform.best_wheel(by_version[version])
        if best is not None:
            return best
    return None


def _python_fits(requires_python: Any, python: str | None) -> bool:
    if not requires_python or python is None:
        return True
    try:
        return SpecifierSet(str(requires_python)).contains(python, prereleases=True)
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

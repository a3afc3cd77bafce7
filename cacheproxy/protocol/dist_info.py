"""Which member of a wheel is its own METADATA: one rule for every way the proxy reads it
(the whole cached wheel, or ranges of the remote one), so both always pick the same file."""

from __future__ import annotations

from collections.abc import Iterable

from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from cacheproxy.errors import NotOwnMetadata


def pick_metadata(names: Iterable[str], name: NormalizedName, version: Version) -> str:
    """The member `{name}-{version}.dist-info/METADATA` at the top level; else the only
    top-level dist-info METADATA of the same project (a version spelt differently). Never a
    guess among several, never another project's (a vendored dist-info)."""
    exact: list[str] = []
    same_project: list[str] = []
    top_level = 0
    for member_name in names:
        directory, _, member = member_name.partition("/")
        if member != "METADATA" or not directory.endswith(".dist-info"):
            continue
        top_level += 1
        project, _, spelt = directory.removesuffix(".dist-info").rpartition("-")
        if canonicalize_name(project) != name:
            continue
        same_project.append(member_name)
        try:
            if Version(spelt) == version:
                exact.append(member_name)
        except InvalidVersion:
            pass
    if len(exact) == 1:
        return exact[0]
    if not exact and len(same_project) == 1:
        return same_project[0]
    found = len(exact) or len(same_project)
    raise NotOwnMetadata(
        f"{found} METADATA files for {name} {version} ({top_level} top-level dist-info "
        "METADATA in all)"
    )

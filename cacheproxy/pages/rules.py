"""What a fleet may install: release cooldown, snapshot, deny and allow lists, as pure code.

`Rules.visible(page, now)` takes a project page (completed with the upload times the proxy
learned from cached files) and the clock, and gives the page clients may see, the reason each
hidden file is hidden, and when the next hidden file becomes visible (the page must be
rendered again then). `Rules.refusal(project)` says whether a whole project is refused.
Nothing here does I/O; see docs/policy.md for what each rule is for.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from cacheproxy.protocol.page import ProjectPage

COOLDOWN = "min-release-age"
SNAPSHOT = "exclude-newer"
DENY = "deny"
ALLOW = "allow"
UNDATED = "unknown-upload-time"
RULE_NAMES = (COOLDOWN, SNAPSHOT, DENY, ALLOW, UNDATED)


def format_time(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_upload_time(value: Any) -> float | None:
    """A PEP 700 upload-time as seconds since the epoch; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def version_of(filename: str) -> Version | None:
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1]
        return parse_sdist_filename(filename)[1]
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


@dataclass(frozen=True)
class Hidden:
    """Why one file is not served, in a line a client can show."""

    rule: str
    reason: str
    upload_time: float | None = None
    visible_at: float | None = None  # None: not by waiting


@dataclass(frozen=True)
class Visible:
    page: ProjectPage
    hidden: dict[str, Hidden] = field(default_factory=dict)
    # When the clock makes the next hidden file visible: the page must be made again then.
    changes_at: float = math.inf


@dataclass(frozen=True)
class Rules:
    min_release_age: float = 0.0
    release_age_exempt: frozenset[str] = frozenset()
    exclude_newer: float | None = None
    deny: tuple[Requirement, ...] = ()
    allow: tuple[Requirement, ...] = ()
    unknown_upload_time: str = "hide"

    @classmethod
    def from_settings(cls, settings: Any) -> Rules:
        """From a Config (or anything with its rule attributes); specs were checked there."""
        return cls(
            min_release_age=settings.min_release_age,
            release_age_exempt=frozenset(map(canonicalize_name, settings.release_age_exempt)),
            exclude_newer=settings.exclude_newer,
            deny=tuple(map(_requirement, settings.deny)),
            allow=tuple(map(_requirement, settings.allow)),
            unknown_upload_time=settings.unknown_upload_time,
        )

    @property
    def active(self) -> bool:
        cooldown_or_snapshot = self.min_release_age > 0 or self.exclude_newer is not None
        return cooldown_or_snapshot or bool(self.deny) or bool(self.allow)

    def describe(self) -> list[str]:
        """The rules in force, one line each, for the status page."""
        lines = []
        if self.min_release_age:
            exempt = ", ".join(sorted(self.release_age_exempt))
            lines.append(
                f"{COOLDOWN}: files younger than {_duration(self.min_release_age)} are hidden"
                + (f" (except {exempt})" if exempt else "")
            )
        if self.exclude_newer is not None:
            lines.append(
                f"{SNAPSHOT}: files uploaded from {format_time(self.exclude_newer)} on are hidden"
            )
        lines += [f"{DENY}: {spec}" for spec in self.deny]
        lines += [f"{ALLOW}: {spec}" for spec in self.allow]
        if self.min_release_age or self.exclude_newer is not None:
            shown = "shown" if self.unknown_upload_time == "show" else "hidden"
            lines.append(f"{UNDATED}: files of unknown upload time are {shown}")
        return lines

    def refusal(self, project: str) -> str | None:
        """Why a whole project is refused (403), or None."""
        for spec in self.deny:
            if spec.name == project and not spec.specifier:
                return f"{project} is denied by this proxy's rule {DENY} {spec}"
        if self.allow and not any(spec.name == project for spec in self.allow):
            return f"{project} is not on this proxy's allow list"
        return None

    def visible(self, page: ProjectPage, now: float) -> Visible:
        project = page.name
        hidden: dict[str, Hidden] = {}
        for entry in page.data["files"]:
            why = self._hidden(project, entry, now)
            if why is not None:
                hidden[entry["filename"]] = why
        if not hidden:
            return Visible(page)
        files = [entry for entry in page.data["files"] if entry["filename"] not in hidden]
        data = {**page.data, "files": files}
        if isinstance(page.data.get("versions"), list):
            data["versions"] = _remaining_versions(page.data["versions"], page.data["files"], files)
        waits = [h.visible_at for h in hidden.values() if h.visible_at is not None]
        return Visible(
            ProjectPage(data, page.origins, page.dropped), hidden, min(waits, default=math.inf)
        )

    def _hidden(self, project: str, entry: dict[str, Any], now: float) -> Hidden | None:
        filename = entry["filename"]
        version = version_of(filename)
        denied = self._version_denied(project, version)
        if denied is not None:
            return denied
        uploaded = parse_upload_time(entry.get("upload-time"))
        cooldown = self.min_release_age and project not in self.release_age_exempt
        if not cooldown and self.exclude_newer is None:
            return None
        if uploaded is None:
            if self.unknown_upload_time == "show":
                return None
            rule = COOLDOWN if cooldown else SNAPSHOT
            return Hidden(UNDATED, f"{filename}: its upload time is unknown and {rule} is on")
        if self.exclude_newer is not None and uploaded >= self.exclude_newer:
            return Hidden(
                SNAPSHOT,
                f"{filename} was uploaded at {format_time(uploaded)}, after this proxy's "
                f"snapshot of {format_time(self.exclude_newer)}",
                uploaded,
            )
        if cooldown and now < uploaded + self.min_release_age:
            visible_at = uploaded + self.min_release_age
            return Hidden(
                COOLDOWN,
                f"{filename} was uploaded at {format_time(uploaded)}; this proxy's "
                f"{COOLDOWN} of {_duration(self.min_release_age)} holds it back until "
                f"{format_time(visible_at)}",
                uploaded,
                visible_at,
            )
        return None

    def _version_denied(self, project: str, version: Version | None) -> Hidden | None:
        for spec in self.deny:
            matches = version is None or spec.specifier.contains(version, prereleases=True)
            if spec.name == project and spec.specifier and matches:
                return Hidden(DENY, f"{project} {version} is denied by the rule {DENY} {spec}")
        allowed = [spec for spec in self.allow if spec.name == project and spec.specifier]
        if allowed and not any(
            version is not None and spec.specifier.contains(version, prereleases=True)
            for spec in allowed
        ):
            wanted = " or ".join(str(spec) for spec in allowed)
            return Hidden(ALLOW, f"{project} {version} is not allowed (only {wanted})")
        return None


def _requirement(spec: str) -> Requirement:
    """A rule's requirement, named as the index names projects (the page path is normalised)."""
    requirement = Requirement(spec)
    requirement.name = canonicalize_name(requirement.name)
    return requirement


def _remaining_versions(
    versions: list[Any], before: Iterable[dict[str, Any]], after: Iterable[dict[str, Any]]
) -> list[Any]:
    """PEP 700 versions without those whose every file is now hidden; a version that never
    had a file is left as it was."""
    had = {_key(version_of(e["filename"])) for e in before}
    has = {_key(version_of(e["filename"])) for e in after}
    return [v for v in versions if _key_of_listed(v) not in had or _key_of_listed(v) in has]


def _key(version: Version | None) -> str | None:
    return None if version is None else str(version)


def _key_of_listed(value: Any) -> str | None:
    try:
        return str(Version(str(value)))
    except InvalidVersion:
        return str(value)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"

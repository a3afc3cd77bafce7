"""cacheproxy warm: fetch through a running proxy every file a lock or requirements file needs,
so a new CI host has them before its first build.

Lock files (uv.lock, pylock.toml) name their files: every wheel and sdist of every package is
fetched, for all platforms, since a host may build images for others. A requirements file names
versions only: pinned lines (`name==1.0`, with or without `--hash`) take every file of that
version (only the hashed ones when hashes are given); anything else needs resolving, which pip
does through the proxy for this machine's Python and platform.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import aiohttp
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from cacheproxy.config import tomllib
from cacheproxy.errors import WarmError

JSON_V1 = "application/vnd.pypi.simple.v1+json"
CONCURRENCY = 8


@dataclass(frozen=True)
class Wanted:
    """Files of one project: by name (lock files), or by version and maybe hashes."""

    project: str
    filenames: frozenset[str] = frozenset()
    version: str | None = None
    sha256s: frozenset[str] = frozenset()

    def matches(self, entry: dict) -> bool:
        if self.filenames:
            return entry["filename"] in self.filenames
        if self.sha256s:
            return entry.get("hashes", {}).get("sha256") in self.sha256s
        return _version_of(entry["filename"]) == self.version


@dataclass
class Report:
    fetched: list[str] = field(default_factory=list)
    already_cached: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # What the proxy's install rules refused (403) or the upstream took down (410), with the
    # proxy's reason: the build that needs it will fail the same way.
    held_back: list[str] = field(default_factory=list)
    bytes: int = 0


# The proxy's answers that carry a rule's reason rather than a fault.
POLICY_STATUSES = (403, 410)


async def _reason(resp: aiohttp.ClientResponse) -> str:
    text = (await resp.text(errors="replace")).strip()
    return text.splitlines()[0] if text else resp.reason or str(resp.status)


def _version_of(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except ValueError:
        return None


def _basename(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def _lock_wants(packages: list[dict], sdist_key: str, wheels_key: str) -> list[Wanted]:
    wants = []
    for package in packages:
        names = set()
        for artifact in [package.get(sdist_key), *(package.get(wheels_key) or [])]:
            if isinstance(artifact, dict) and (artifact.get("name") or artifact.get("url")):
                names.add(artifact.get("name") or _basename(artifact["url"]))
        if names:
            wants.append(Wanted(canonicalize_name(package["name"]), frozenset(names)))
    return wants


def parse_uv_lock(text: str) -> list[Wanted]:
    data = tomllib.loads(text)
    return _lock_wants(data.get("package", []), "sdist", "wheels")


def parse_pylock(text: str) -> list[Wanted]:
    """PEP 751: [[packages]] with an sdist table and a wheels array, each with name or url."""
    data = tomllib.loads(text)
    return _lock_wants(data.get("packages", []), "sdist", "wheels")


_PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*===?\s*([^\s;\\]+)")
_HASH = re.compile(r"--hash[=\s]sha256:([0-9a-f]{64})")


def parse_requirements(text: str) -> tuple[list[Wanted], list[str]]:
    """Pinned lines as Wanted, and the lines that need resolving."""
    joined = re.sub(r"\\\n", " ", text)
    wants, unresolved = [], []
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            if not line.startswith(("--hash", "-i", "--index-url", "--extra-index-url")):
                unresolved.append(line)
            continue
        match = _PINNED.match(line)
        if match is None:
            unresolved.append(line)
            continue
        hashes = frozenset(_HASH.findall(line))
        wants.append(
            Wanted(canonicalize_name(match.group(1)), version=match.group(3), sha256s=hashes)
        )
    return wants, unresolved


def read_wants(path: Path) -> tuple[list[Wanted], list[str]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise WarmError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if path.name == "uv.lock":
            return parse_uv_lock(text), []
        if path.name == "pylock.toml" or re.fullmatch(r"pylock\.[^.]+\.toml", path.name):
            return parse_pylock(text), []
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise WarmError(f"{path} is not a valid lock file: {exc}") from None
    if path.suffix in (".txt", ".in") or path.name.startswith("requirements"):
        return parse_requirements(text)
    raise WarmError(f"{path}: expected uv.lock, pylock.toml or a requirements .txt file")


def resolve_with_pip(lines: list[str], index_url: str) -> None:
    """Let pip resolve and download the unpinned requirements through the proxy; the proxy
    keeps every file pip fetches."""
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("\n".join(lines) + "\n")
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-cache-dir"]
        command += ["--dest", str(Path(tmp) / "files"), "--index-url", index_url]
        command += ["--disable-pip-version-check", "-r", str(requirements)]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise WarmError(f"resolving the unpinned requirements failed: {last}")


async def _files_of(
    session: aiohttp.ClientSession, index_url: str, want: Wanted, report: Report
) -> list[str]:
    page_url = urljoin(index_url, f"{want.project}/")
    async with session.get(page_url, headers={"Accept": JSON_V1}) as resp:
        if resp.status in POLICY_STATUSES:
            report.held_back.append(f"{want.project}: {await _reason(resp)}")
            return []
        if resp.status != 200:
            raise WarmError(f"{want.project}: the proxy answered {resp.status}")
        page = await resp.json(content_type=None)
    urls = []
    listed = set()
    for entry in page.get("files", []):
        if want.matches(entry):
            listed.add(entry["filename"])
            file_url = urljoin(page_url, entry["url"])
            urls.append(file_url)
            if entry.get("core-metadata") or entry.get("dist-info-metadata"):
                urls.append(file_url.split("#", 1)[0] + ".metadata")
    # A locked file the page leaves off may be held back by a rule: asked for by name, the
    # proxy says which and until when.
    urls += [urljoin(page_url, quote(name)) for name in sorted(want.filenames - listed)]
    if not urls:
        raise WarmError(f"{want.project}: none of the wanted files is on its page")
    return urls


async def _fetch(session: aiohttp.ClientSession, url: str, report: Report) -> None:
    name = _basename(url)
    async with session.get(url) as resp:
        if resp.status in POLICY_STATUSES:
            report.held_back.append(f"{name}: {await _reason(resp)}")
            return
        if resp.status != 200:
            report.failed.append(f"{name}: the proxy answered {resp.status}")
            return
        async for chunk in resp.content.iter_chunked(256 * 1024):
            report.bytes += len(chunk)
        cached = resp.headers.get("X-Cache") == "hit"
    (report.already_cached if cached else report.fetched).append(name)


async def warm(
    wants: list[Wanted],
    index_url: str,
    token: str | None = None,
    on_total: Callable[[int], None] | None = None,
    on_file: Callable[[], None] | None = None,
) -> Report:
    """Fetch every wanted file through the proxy at index_url, CONCURRENCY at a time; on_total
    hears how many files there are once the pages are read, on_file each one done."""
    report = Report()
    auth = aiohttp.BasicAuth("warm", token) if token else None
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    limit = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession(auth=auth, timeout=timeout) as session:

        async def one_project(want: Wanted) -> list[str]:
            async with limit:
                try:
                    return await _files_of(session, index_url, want, report)
                except WarmError as exc:
                    report.failed.append(str(exc))
                    return []

        async def one_file(url: str) -> None:
            async with limit:
                try:
                    await _fetch(session, url, report)
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    report.failed.append(f"{_basename(url)}: {type(exc).__name__}")
            if on_file is not None:
                on_file()

        try:
            pages = await asyncio.gather(*(one_project(w) for w in wants))
        except aiohttp.ClientConnectorError as exc:
            raise WarmError(f"cannot reach the proxy at {index_url}: {exc.os_error}") from None
        urls = [url for urls in pages for url in urls]
        if on_total is not None:
            on_total(len(urls))
        await asyncio.gather(*(one_file(url) for url in urls))
    return report

"""A local upstream index for tests: serves real wheels as PEP 691 JSON or PEP 503 HTML, counts
every request, and misbehaves on demand (corrupt bytes, slow or trickled bodies, error
statuses)."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import html
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import encode_basic_auth, web
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from tests.fakes.wheels import metadata_of

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"


@dataclass
class UpstreamFile:
    project: str
    filename: str
    # Bodies are left out of the repr: pytest formats fixture values, and two wheels are 8 MiB.
    data: bytes = field(repr=False)
    requires_python: str | None = None
    yanked: bool | str = False
    metadata: bytes | None = field(default=None, repr=False)
    upload_time: str = "2024-01-02T03:04:05.000000Z"
    gpg_sig: bool | None = None
    # PEP 740 attestations, served at <file url>.provenance
    provenance: bytes | None = field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def url_path(self) -> str:
        return f"/files/{self.sha256[:2]}/{self.filename}"


@dataclass
class UpstreamIndex:
    files: dict[str, UpstreamFile] = field(default_factory=dict)
    mode: str = "json"  # "json": PEP 691 negotiation; "html": only text/html, like many mirrors
    absolute_urls: bool = True
    corrupt: set[str] = field(default_factory=set)
    truncate: set[str] = field(default_factory=set)
    chunk_delay: float = 0.0
    chunk_size: int = 64 * 1024
    page_status: int | None = None
    fail_next: int = 0  # that many page requests answer 503 first
    # Served instead of the real page: garbage tests (left out of the repr, like file bodies).
    page_body: bytes | None = field(default=None, repr=False)
    page_body_type: str = JSON_V1
    required_auth: tuple[str, str] | None = None
    page_delay: float = 0.0
    page_trickle: float = 0.0  # seconds between the bytes of a page body: one at a time
    requests: collections.Counter = field(default_factory=collections.Counter)
    # Project-level fields of newer PEPs (project-status, tracks, alternate-locations, _keys)
    page_extras: dict[str, object] = field(default_factory=dict)
    # A file listed at another URL than its own (a hostile or broken page), by filename.
    url_overrides: dict[str, str] = field(default_factory=dict)
    # Files the JSON page lists with neither hash nor size, like a bare HTML index.
    hashless: set[str] = field(default_factory=set)
    json_api: bool = True  # serve /pypi/PROJECT[/VERSION]/json (False: 404, as many do)
    # Body bytes sent per file name, ranged and whole GETs alike.
    bytes_sent: collections.Counter = field(default_factory=collections.Counter)
    # Like many plain file servers: Range ignored (200 with the whole body), no Accept-Ranges.
    refuse_ranges: bool = False
    # Each ranged GET held open this long, so ranges asked for together overlap; the most
    # that were open at once.
    range_delay: float = 0.0
    ranges_in_flight: int = 0
    ranges_in_flight_peak: int = 0

    def add_wheel(
        self,
        path: Path,
        *,
        yanked: bool | str = False,
        requires_python: str | None = None,
        with_metadata: bool = True,
    ) -> UpstreamFile:
        name = parse_wheel_filename(path.name)[0]
        entry = UpstreamFile(
            project=canonicalize_name(name),
            filename=path.name,
            data=path.read_bytes(),
            requires_python=requires_python,
            yanked=yanked,
            metadata=metadata_of(path) if with_metadata else None,
        )
        self.files[path.name] = entry
        return entry

    def project_files(self, project: str) -> list[UpstreamFile]:
        return [f for f in self.files.values() if f.project == project]

    def page_hits(self, project: str) -> int:
        return self.requests[("GET", f"/simple/{project}/")]

    def file_hits(self, filename: str) -> int:
        """GETs of a file (or its .metadata or .provenance), ranged ones included."""
        base = filename.removesuffix(".metadata").removesuffix(".provenance")
        entry = self.files[base]
        path = entry.url_path + filename[len(base) :]
        return self.requests[("GET", path)]

    def reset_counts(self) -> None:
        self.requests.clear()
        self.bytes_sent.clear()


def _wants_json(request: web.Request) -> bool:
    """JSON when the client rates it at least as high as any HTML form (PEP 691)."""
    quality = {}
    for part in request.headers.get("Accept", "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                q = float(param[2:])
        quality[media] = q
    json_q = quality.get(JSON_V1, 0.0)
    return json_q > 0 and json_q >= max(quality.get(HTML_V1, 0.0), quality.get("text/html", 0.0))


def _file_url(index: UpstreamIndex, request: web.Request, entry: UpstreamFile) -> str:
    if entry.filename in index.url_overrides:
        return index.url_overrides[entry.filename]
    if index.absolute_urls:
        return str(request.url.with_path(entry.url_path).with_query(None))
    return "../.." + entry.url_path


def _json_page(index: UpstreamIndex, request: web.Request, project: str) -> bytes:
    files = []
    for entry in index.project_files(project):
        item = {
            "filename": entry.filename,
            "url": _file_url(index, request, entry),
            "hashes": {"sha256": entry.sha256},
            "requires-python": entry.requires_python,
            "yanked": entry.yanked,
            "size": len(entry.data),
            "upload-time": entry.upload_time,
        }
        if entry.filename in index.hashless:
            item["hashes"] = {}
            del item["size"]
        if entry.metadata is not None:
            meta = {"sha256": hashlib.sha256(entry.metadata).hexdigest()}
            item["core-metadata"] = item["data-dist-info-metadata"] = meta
        if entry.gpg_sig is not None:
            item["gpg-sig"] = entry.gpg_sig
        if entry.provenance is not None:
            item["provenance"] = item["url"] + ".provenance"
        files.append(item)
    versions = sorted(
        {parse_wheel_filename(f.filename)[1].public for f in index.project_files(project)}
    )
    page = {
        "meta": {"api-version": "1.1"},
        "name": project,
        "versions": versions,
        "files": files,
        **index.page_extras,
    }
    return json.dumps(page).encode()


def _html_page(index: UpstreamIndex, request: web.Request, project: str) -> bytes:
    lines = ['<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.1">']
    status = index.page_extras.get("project-status")
    if isinstance(status, dict):
        lines.append(f'<meta name="pypi:project-status" content="{status["status"]}">')
        if "reason" in status:
            reason = html.escape(status["reason"])
            lines.append(f'<meta name="pypi:project-status-reason" content="{reason}">')
    for key in ("tracks", "alternate-locations"):
        for url in index.page_extras.get(key, []):
            lines.append(f'<meta name="pypi:{key}" content="{html.escape(url)}">')
    lines.append(f"<title>Links for {project}</title></head><body>")
    for entry in index.project_files(project):
        attrs = f' href="{html.escape(_file_url(index, request, entry))}#sha256={entry.sha256}"'
        if entry.requires_python:
            attrs += f' data-requires-python="{html.escape(entry.requires_python)}"'
        if entry.yanked:
            reason = entry.yanked if isinstance(entry.yanked, str) else ""
            attrs += f' data-yanked="{html.escape(reason)}"'
        if entry.metadata is not None:
            digest = hashlib.sha256(entry.metadata).hexdigest()
            attrs += (
                f' data-core-metadata="sha256={digest}" data-dist-info-metadata="sha256={digest}"'
            )
        if entry.gpg_sig is not None:
            attrs += f' data-gpg-sig="{"true" if entry.gpg_sig else "false"}"'
        if entry.provenance is not None:
            provenance = html.escape(_file_url(index, request, entry) + ".provenance")
            attrs += f' data-provenance="{provenance}"'
        lines.append(f"<a{attrs}>{entry.filename}</a><br/>")
    lines.append("</body></html>")
    return "\n".join(lines).encode()


def _release_of(entry: UpstreamFile) -> str:
    return str(parse_wheel_filename(entry.filename)[1])


def _api_file(index: UpstreamIndex, request: web.Request, entry: UpstreamFile) -> dict:
    return {
        "filename": entry.filename,
        "url": _file_url(index, request, entry),
        "digests": {"sha256": entry.sha256, "md5": hashlib.md5(entry.data).hexdigest()},
        "size": len(entry.data),
        "packagetype": "bdist_wheel",
        "python_version": "py3",
        "requires_python": entry.requires_python,
        "yanked": bool(entry.yanked),
        "upload_time_iso_8601": entry.upload_time,
    }


def _api_document(
    index: UpstreamIndex, request: web.Request, project: str, release: str | None
) -> dict | None:
    """The JSON API's project document (release None) or one release's, from the same files."""
    files = index.project_files(project)
    releases: dict[str, list[dict]] = {}
    for entry in files:
        releases.setdefault(_release_of(entry), []).append(_api_file(index, request, entry))
    if not releases or (release is not None and release not in releases):
        return None
    shown = release or max(releases, key=Version)

    document = {
        "info": {"name": project, "version": shown, "summary": f"{project} for tests"},
        "urls": releases[shown],
        "last_serial": len(files),
    }
    if release is None:
        document["releases"] = releases
    return document


async def _trickle(
    request: web.Request, body: bytes, headers: dict[str, str], gap: float
) -> web.StreamResponse:
    """The body one byte at a time, gap seconds apart: each gap is well within any read
    timeout, the whole takes minutes."""
    response = web.StreamResponse(headers=headers)
    response.content_length = len(body)
    await response.prepare(request)
    for offset in range(len(body)):
        await response.write(body[offset : offset + 1])
        await asyncio.sleep(gap)
    await response.write_eof()
    return response


def make_app(index: UpstreamIndex) -> web.Application:
    @web.middleware
    async def count(request: web.Request, handler):
        index.requests[(request.method, request.path)] += 1
        if index.required_auth is not None:
            expected = encode_basic_auth(*index.required_auth)
            if request.headers.get("Authorization") != expected:
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="up"'})
        return await handler(request)

    async def page(request: web.Request) -> web.StreamResponse:
        project = request.match_info["project"]
        if index.page_delay:
            await asyncio.sleep(index.page_delay)
        if index.fail_next > 0:
            index.fail_next -= 1
            return web.Response(status=503, text="briefly unwell")
        if index.page_status is not None:
            return web.Response(status=index.page_status, text="upstream trouble")
        if index.page_body is not None:
            return web.Response(body=index.page_body, content_type=index.page_body_type)
        if not index.project_files(project):
            return web.Response(status=404, text="not found")
        as_json = index.mode == "json" and _wants_json(request)
        body = (
            _json_page(index, request, project) if as_json else _html_page(index, request, project)
        )
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Last-Modified": "Tue, 02 Jan 2024 03:04:05 GMT"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        content_type = JSON_V1 if as_json else ("text/html" if index.mode == "html" else HTML_V1)
        headers["Content-Type"] = content_type
        if index.page_trickle:
            return await _trickle(request, body, headers, index.page_trickle)
        return web.Response(body=body, headers=headers)

    async def file(request: web.Request) -> web.StreamResponse:
        name = request.match_info["filename"]
        base = name.removesuffix(".metadata").removesuffix(".provenance")
        entry = index.files.get(base)
        if entry is None or request.match_info["prefix"] != entry.sha256[:2]:
            return web.Response(status=404)
        if name == base + ".provenance":
            if entry.provenance is None:
                return web.Response(status=404)
            return web.Response(body=entry.provenance, content_type="application/json")
        if name != base:
            if entry.metadata is None:
                return web.Response(status=404)
            return web.Response(body=entry.metadata, content_type="application/octet-stream")
        data = entry.data
        if name in index.corrupt:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        status, start, end = 200, 0, len(data)
        spec = "" if index.refuse_ranges else request.headers.get("Range", "")
        if spec.startswith("bytes="):
            first, _, last = spec[6:].partition("-")
            if first:
                start, end = int(first), (int(last) + 1 if last else len(data))
            else:
                start = len(data) - int(last)
            status = 206
        if status == 206 and request.method == "GET":
            index.ranges_in_flight += 1
            index.ranges_in_flight_peak = max(index.ranges_in_flight_peak, index.ranges_in_flight)
            try:
                await asyncio.sleep(index.range_delay)
            finally:
                index.ranges_in_flight -= 1
        response = web.StreamResponse(status=status)
        response.content_type = "application/octet-stream"
        response.last_modified = datetime.strptime(
            entry.upload_time, "%Y-%m-%dT%H:%M:%S.%fZ"
        ).replace(tzinfo=timezone.utc)
        response.content_length = end - start
        if not index.refuse_ranges:
            response.headers["Accept-Ranges"] = "bytes"
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        body = data[start:end]
        if name in index.truncate and status == 200:
            body = body[: len(body) // 2]
        for offset in range(0, len(body), index.chunk_size):
            chunk = body[offset : offset + index.chunk_size]
            index.bytes_sent[name] += len(chunk)
            await response.write(chunk)
            if index.chunk_delay:
                await asyncio.sleep(index.chunk_delay)
        if name in index.truncate and status == 200:
            request.transport.close()
            return response
        await response.write_eof()
        return response

    async def api_document(request: web.Request) -> web.Response:
        if index.page_delay:
            await asyncio.sleep(index.page_delay)
        if index.page_status is not None:
            return web.Response(status=index.page_status, text="upstream trouble")
        project, release = request.match_info["project"], request.match_info.get("release")
        found = _api_document(index, request, project, release) if index.json_api else None
        if found is None:
            return web.Response(status=404, text="not found")
        body = json.dumps(found).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Last-Modified": "Tue, 02 Jan 2024 03:04:05 GMT"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers=headers, content_type="application/json")

    async def root(request: web.Request) -> web.Response:
        projects = sorted({f.project for f in index.files.values()})
        links = "".join(f'<a href="{p}/">{p}</a>' for p in projects)
        return web.Response(text=f"<html><body>{links}</body></html>", content_type="text/html")

    app = web.Application(middlewares=[count])
    app.router.add_get("/simple/", root)
    app.router.add_get("/simple/{project}/", page)
    app.router.add_get("/files/{prefix}/{filename}", file)
    app.router.add_get("/pypi/{project}/json", api_document)
    app.router.add_get("/pypi/{project}/{release}/json", api_document)
    return app

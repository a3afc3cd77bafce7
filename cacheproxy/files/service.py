"""Files (wheels, sdists, .metadata): answered from the store, a running download, a relay, or
for a HEAD or a small range of a file not cached yet, straight from the upstream.

`FileService.answer` decides (which bytes, from where, with what status) and returns an answer,
a small value the web layer turns into a response (http/file_responses.py); it never speaks
HTTP. Every answer carries its conditional/range `Decision`; a bodiless one (304, 412, 416)
carries nothing else to send.

A HEAD or a small Range on a file not cached yet is answered without downloading it
(`ColdFiles`): resolvers range-read wheels (a HEAD for the length, then the tail, then a small
span) and none of that needs the whole file, so none of it starts the download; the download
starts when a client asks for the whole file. Every decision still goes through
`ranges.evaluate`, against the same validators a running download would give, so the answer
does not depend on the file's state.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypedDict

from cacheproxy.documents.singleflight import SingleFlight
from cacheproxy.errors import DiskFull, UpstreamError
from cacheproxy.files.downloads import Download, DownloadReader, Downloads
from cacheproxy.files.extracted import extract_and_store
from cacheproxy.files.ranges import Decision, Outcome, Validators, evaluate
from cacheproxy.files.relay import fetch_range, open_relay
from cacheproxy.files.tail_metadata import TailMetadata
from cacheproxy.pages.service import PageService
from cacheproxy.pages.visibility import Refused
from cacheproxy.protocol.page import METADATA_SUFFIX, FileSource
from cacheproxy.storage.disk import DiskSpace
from cacheproxy.storage.port import FilesWithFacts
from cacheproxy.storage.records import StoredFile
from cacheproxy.upstream import Upstream

log = logging.getLogger(__name__)

# Ranges up to this size asked for during a download are fetched once and kept in memory
# while it runs; larger ones are streamed through to their one client.
SHARED_RANGE_LIMIT = 1024 * 1024
# Lengths learned by an upstream HEAD, by URL (files are immutable): enough for a resolution
# of a few thousand files, small enough not to matter.
_KNOWN_LENGTHS = 4096


@dataclass(frozen=True)
class FileRequest:
    """What a client asked for, in plain terms."""

    method: str
    headers: Mapping[str, str]


class Body(Protocol):
    """Bytes to stream; raising an UpstreamError mid-way means the transfer must be cut off."""

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Answer:
    outcome: str  # how the cache answered: hit, miss, coalesced, uncached, miss-range...
    filename: str
    decision: Decision
    total: int | None  # the whole file's length, when known
    etag: str | None = None
    last_modified: float | None = None

    @property
    def has_body(self) -> bool:
        return self.decision.outcome in (Outcome.WHOLE, Outcome.PARTIAL)

    @property
    def length(self) -> int | None:
        """How many bytes the body holds, when known."""
        end = self.decision.end if self.decision.end is not None else self.total
        return None if end is None else end - self.decision.start


@dataclass(frozen=True)
class FromStore(Answer):
    """A stored file, sent from its path (sendfile)."""

    path: str = ""


@dataclass(frozen=True)
class InMemory(Answer):
    """A small answer already in memory: a shared range, extracted metadata."""

    data: bytes = b""


@dataclass(frozen=True)
class Streamed(Answer):
    """Bytes that arrive as they are sent: a running download, a relay of the upstream."""

    body: Body | None = None


class AnswerFields(TypedDict):
    """The fields the answers one request may get share, passed on as **fields."""

    filename: str
    decision: Decision
    total: int | None


@dataclass(frozen=True)
class NotFound:
    reason: str
    outcome: str | None = None


FileAnswer = FromStore | InMemory | Streamed | Answer | NotFound | Refused


def _etag(sha256: str | None) -> str | None:
    return f'"{sha256}"' if sha256 else None


def _expected_etag(source: FileSource) -> str | None:
    """The ETag the file will have once stored: its sha256, when the index states it."""
    return _etag(source.hash_value) if source.hash_name == "sha256" else None


class FileService:
    def __init__(
        self,
        store: FilesWithFacts,
        pages: PageService,
        downloads: Downloads,
        upstream: Upstream,
        disk: DiskSpace,
        offline: bool,
    ) -> None:
        self.store = store
        self.pages = pages
        self.downloads = downloads
        self.upstream = upstream
        self.disk = disk
        self.offline = offline
        # Cold files: HEAD and small ranges without a download, metadata from wheel tails.
        self.cold = ColdFiles(upstream)
        self.tail_metadata = TailMetadata(store, upstream, self.cold.length, downloads.keep_tail)

    async def answer(self, project: str, filename: str, request: FileRequest) -> FileAnswer:
        refused = await self.pages.refusal(project, filename)
        if refused is not None:
            return refused
        stored = await self.store.find_file(project, filename)
        if stored is not None:
            return await self._from_store(stored, filename, request)
        if self.offline:
            return NotFound(f"{filename} is not cached and the proxy is offline")
        source = await self.pages.find_file(project, filename)
        if source is None and (gone := await self.pages.taken_down(project, filename)):
            return gone
        if source is None and filename.endswith(METADATA_SUFFIX):
            return await self._extracted(project, filename, request)
        if source is None:
            return NotFound(f"{project} has no file {filename}")
        stored = self.downloads.just_stored(project, filename)
        if stored is not None:  # committed while this request was looking things up
            return await self._from_store(stored, filename, request)
        coalesced = self.downloads.is_running(project, filename)
        early = None if coalesced else await self.cold.answer(source, filename, request)
        if early is not None:
            return early
        if not coalesced and not await self.disk.has_room(source.size or 0):
            log.warning("disk full: %s is served without being cached", filename)
            return await self._relay(source, filename, request)
        reader = self.downloads.join(project, filename, source)
        try:
            return await self._from_download(reader, request, coalesced)
        except BaseException:
            await reader.aclose()
            raise

    @staticmethod
    async def _from_store(stored: StoredFile, filename: str, request: FileRequest) -> FileAnswer:
        validators = Validators(_etag(stored.sha256), stored.mtime)
        decision = evaluate(request.method, request.headers, validators, stored.size)
        return FromStore(
            "hit", filename, decision, stored.size, validators.etag, stored.mtime, path=stored.path
        )

    async def _from_download(
        self, reader: DownloadReader, request: FileRequest, coalesced: bool
    ) -> FileAnswer:
        download = reader.download
        await download.wait_started()
        if download.failed_empty:
            await reader.aclose()
            if isinstance(download.error, DiskFull):
                return await self._relay(download.source, download.filename, request)
            assert download.error is not None
            if download.error.status == 404:
                return NotFound(f"upstream has no {download.filename}", "miss")
            raise download.error
        validators = Validators(_expected_etag(download.source), None)
        decision = evaluate(request.method, request.headers, validators, download.total)
        outcome = "coalesced" if coalesced else "miss"
        if download.from_shared:
            outcome = "shared"
        common: AnswerFields = dict(
            filename=download.filename,
            decision=decision,
            total=download.total,
        )
        if not _has_body(decision, request):
            await reader.aclose()
            return Answer(outcome, **common, etag=validators.etag)
        if decision.outcome is Outcome.PARTIAL:
            ahead = await self._range_ahead(download, decision)
            if ahead is not None:
                await reader.aclose()
                return ahead
        return Streamed(
            outcome,
            **common,
            etag=validators.etag,
            body=_DownloadBody(reader, decision),
        )

    async def _range_ahead(self, download: Download, decision: Decision) -> FileAnswer | None:
        """Installers range-read a wheel's tail for its metadata: rather than wait for the
        whole file, ask the upstream for just that range while the full download goes on.
        Small ranges are fetched once per download and shared, so concurrent cold clients
        cost the upstream one tail, not one each. None: read it from the download."""
        start, end = decision.start, decision.end
        assert end is not None
        if download.written >= end or download.error is not None:
            return None
        common: AnswerFields = dict(
            filename=download.filename, decision=decision, total=download.total
        )
        url = download.source.url
        if end - start > SHARED_RANGE_LIMIT:
            opened = await open_relay(self.upstream, url, (start, end), None)
            return None if opened is None else Streamed("miss-range", **common, body=opened[0])
        fetched, joined = download.shared_range(
            start, end - 1, lambda: fetch_range(self.upstream, url, start, end)
        )
        data = await fetched
        if data is None:
            return None  # the upstream would not give the range: wait for the download
        return InMemory("coalesced-range" if joined else "miss-range", **common, data=data)

    async def _relay(self, source: FileSource, filename: str, request: FileRequest) -> FileAnswer:
        """Pass a file through without storing it (the disk is full), still verified."""
        validators = Validators(_expected_etag(source), None)
        decision = evaluate(request.method, request.headers, validators, source.size)
        if not _has_body(decision, request):
            return Answer("uncached", filename, decision, source.size, validators.etag)
        partial = decision.outcome is Outcome.PARTIAL
        span = (decision.start, decision.end) if partial and decision.end is not None else None
        opened = await open_relay(self.upstream, source.url, span, source)
        if opened is None:
            return NotFound(f"upstream has no {filename}", "uncached")
        relayed, length = opened
        total = source.size if partial else (length if length is not None else source.size)
        return Streamed("uncached", filename, decision, total, validators.etag, body=relayed)

    async def _extracted(self, project: str, filename: str, request: FileRequest) -> FileAnswer:
        """Metadata the proxy advertised but no longer holds (evicted): extract it again from
        the wheel, downloading the wheel first if that was evicted too."""
        wheel = filename.removesuffix(METADATA_SUFFIX)
        source = await self.pages.find_file(project, wheel)
        if source is None or not source.extract_metadata:
            return NotFound(f"{project} has no file {filename}")
        stored = await self.store.find_file(project, wheel)
        data = None
        if stored is None:
            data = await self.tail_metadata.read(project, wheel, source)
        if stored is None and data is None:
            reader = self.downloads.join(project, wheel, source)
            await reader.aclose()
            await reader.download.finished()
            if reader.download.error is not None:
                raise reader.download.error
            stored = await self.store.find_file(project, wheel)
        if data is None and stored is not None:
            data = await extract_and_store(self.store, project, wheel, stored.path)
        if data is None:
            # Not advertised again: a client told it exists would fail on it.
            await self.store.learn(project, wheel, **{"metadata-unreadable": True})
            return NotFound(f"no metadata can be read from {wheel}")
        validators = Validators(None, None)
        decision = evaluate(request.method, request.headers, validators, len(data))
        end = decision.end if decision.end is not None else len(data)
        part = data[decision.start : end] if decision.outcome is Outcome.PARTIAL else data
        return InMemory("extracted", filename, decision, len(data), data=part)


class ColdFiles:
    """HEAD and small ranges of files not cached yet, each from one upstream request shared by
    all who ask meanwhile."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._flights: SingleFlight[object] = SingleFlight()
        self._lengths: OrderedDict[str, int] = OrderedDict()

    async def length(self, source: FileSource) -> int | None:
        """The file's length: the page's size, else one upstream HEAD shared by all who ask;
        None when neither says."""
        if source.size is not None:
            return source.size
        known = self._lengths.get(source.url)
        if known is None:
            found = await self._flights.run(("head", source.url), lambda: self._head(source.url))
            if not isinstance(found, int):
                return None
            known = found
            self._lengths[source.url] = known
            if len(self._lengths) > _KNOWN_LENGTHS:
                self._lengths.popitem(last=False)
        return known

    async def _head(self, url: str) -> int | None:
        try:
            async with self.upstream.open_file(url, method="HEAD") as body:
                if body.status != 200:
                    return None
                return body.content_length
        except UpstreamError as exc:
            log.info("HEAD of %s failed: %s", url, exc)
            return None

    async def answer(
        self, source: FileSource, filename: str, request: FileRequest
    ) -> FileAnswer | None:
        """A HEAD, a bodiless status or a small range of a cold file; None when the request
        needs the download (the whole file, a large range, an upstream that will not say)."""
        method = request.method
        if method not in ("GET", "HEAD") or (method == "GET" and "Range" not in request.headers):
            return None
        total = await self.length(source)
        if total is None:
            return None
        validators = Validators(_expected_etag(source), None)
        decision = evaluate(method, request.headers, validators, total)
        common: AnswerFields = dict(filename=filename, decision=decision, total=total)
        if method == "HEAD" or decision.outcome not in (Outcome.WHOLE, Outcome.PARTIAL):
            return Answer("cold-head", **common, etag=validators.etag)
        if decision.outcome is Outcome.WHOLE or decision.end is None:
            return None
        start, end = decision.start, decision.end
        if end - start > SHARED_RANGE_LIMIT:
            return None
        key = ("range", source.url, start, end)
        joined = self._flights.is_running(key)
        data = await self._flights.run(
            key, lambda: fetch_range(self.upstream, source.url, start, end)
        )
        if not isinstance(data, bytes):
            return None  # the upstream would not give the range: the download will
        outcome = "coalesced-range" if joined else "miss-range"
        return InMemory(outcome, **common, etag=validators.etag, data=data)


def _has_body(decision: Decision, request: FileRequest) -> bool:
    return decision.outcome in (Outcome.WHOLE, Outcome.PARTIAL) and request.method != "HEAD"


class _DownloadBody:
    """The bytes a decision asks for, read from a running download as they land."""

    def __init__(self, reader: DownloadReader, decision: Decision) -> None:
        self._reader = reader
        self._decision = decision

    def chunks(self):
        return self._reader.chunks(self._decision.start, self._decision.end)

    def spans(self):
        """(offset, count) in `fd` as the bytes land: sent by sendfile, no copy in memory."""
        return self._reader.spans(self._decision.start, self._decision.end)

    @property
    def fd(self) -> int | None:
        return self._reader.fd

    async def aclose(self) -> None:
        await self._reader.aclose()

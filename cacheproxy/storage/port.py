"""What the services use of a store, by part: pages, their versions, JSON API documents,
files, what was learned about files, takedowns, maintenance and numbers. storage/local.py
(`Store`) is the implementation; a service takes the narrowest part it uses, or StorePort.

Asynchronous methods run the store's blocking work in a worker thread; the blocking ones
(takedowns, maintenance) are for a worker thread or the cache commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from cacheproxy.storage.maintenance import VerifyReport
from cacheproxy.storage.records import CachedDocument, CachedPage, StoredFile

FileFacts = dict[str, dict[str, object]]


@runtime_checkable
class PageStore(Protocol):
    """Project pages as stored (CachedPage, the page in its compact form)."""

    async def get_page(self, project: str) -> CachedPage | None: ...

    async def put_page(self, project: str, entry: CachedPage) -> None: ...

    async def page_with_version(
        self, project: str
    ) -> tuple[tuple[int, int], CachedPage | None]: ...

    async def projects(self) -> list[str]: ...


@runtime_checkable
class PageVersions(Protocol):
    """Versions every process sees: a value derived from a page at one version is current
    while the version is unchanged. page_version also changes with the file facts."""

    async def page_version(self, project: str) -> tuple[int, int, int]: ...

    async def stored_page_version(self, project: str) -> tuple[int, int]: ...


@runtime_checkable
class ApiDocumentStore(Protocol):
    """JSON API documents, release "" for the project's own."""

    async def get_api_document(self, project: str, release: str) -> CachedDocument | None: ...

    async def put_api_document(self, project: str, release: str, entry: CachedDocument) -> None: ...


@runtime_checkable
class FileStore(Protocol):
    """Stored files: found by project and filename, written to a staging path, verified,
    then committed (None: too large to keep, though complete), served by path."""

    async def find_file(self, project: str, filename: str) -> StoredFile | None: ...

    def new_staging_path(self) -> Path: ...

    async def commit_file(
        self, project: str, filename: str, staged: Path, sha256: str
    ) -> StoredFile | None: ...

    async def discard(self, path: Path) -> None: ...


@runtime_checkable
class FileFactStore(Protocol):
    """What the proxy learned about the files it cached (size, upload-time,
    metadata-sha256), so pages can show what an index may not state."""

    async def learn(self, project: str, filename: str, **facts: object) -> None: ...

    async def file_facts(self, project: str) -> FileFacts: ...

    async def put_extracted_metadata(
        self, project: str, wheel: str, data: bytes, sha256: str
    ) -> None: ...


@runtime_checkable
class FilesWithFacts(FileStore, FileFactStore, Protocol):
    """Stored files and what was learned about them: the part the file services use."""


@runtime_checkable
class Takedowns(Protocol):
    """Files the upstream no longer lists. Blocking."""

    def taken_down(self, project: str) -> dict[str, float]: ...

    def forget_taken_down(self, project: str, filenames: list[str], now: float) -> int: ...


@runtime_checkable
class StoreMaintenance(Protocol):
    """For the cache commands, run beside a server. Blocking."""

    def file_records(self) -> list[tuple[str, str, int, float]]: ...

    def purge_project(self, project: str) -> int: ...

    def prune(self, max_size: int | None, older_than: float | None, now: float) -> int: ...

    def verify_sync(self) -> VerifyReport: ...

    def usage_sync(self) -> tuple[int, int, int]: ...


@runtime_checkable
class StoreStats(Protocol):
    """Numbers for metrics, the status page and /ready."""

    evictions: int

    async def usage(self) -> tuple[int, int, int]: ...

    async def writable(self) -> bool: ...


@runtime_checkable
class StorePort(
    PageStore,
    PageVersions,
    ApiDocumentStore,
    FileStore,
    FileFactStore,
    Takedowns,
    StoreMaintenance,
    StoreStats,
    Protocol,
):
    """Everything the services and the cache commands use of a store."""

"""The shared tier: one S3 bucket behind every node of a fleet, beside each node's local store.

Files are immutable and keyed by their sha256 (PREFIX/files/sha256/ab/abcdef...), so nodes
share them without coordinating. Pages are keyed per index and project (PREFIX/pages/INDEX/
PROJECT) and the last writer wins, which is right for snapshots of the same upstream page.

Nothing here fails a client request: reads answer None when the tier is absent, slow or
broken; writes go through a background queue. Failures are counted and feed a circuit breaker
so that a tier that is down is skipped without network until a probe finds it back.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

from cacheproxy.config import SharedCacheSettings
from cacheproxy.errors import ObjectMissing, SharedTierError, TierUnavailable
from cacheproxy.storage.s3 import maintenance
from cacheproxy.storage.s3.body import SharedBody
from cacheproxy.storage.s3.breaker import SharedCounters
from cacheproxy.storage.s3.bucket import GuardedBucket
from cacheproxy.storage.s3.sdk import ClientError
from cacheproxy.storage.s3.uploads import (
    UploadQueue,
    already_exists,
    put_file_multipart,
    put_object,
)

log = logging.getLogger(__name__)
SHA256 = re.compile(r"[0-9a-f]{64}")
PAGE_FORMAT = 1


class SharedTier:
    def __init__(
        self,
        settings: SharedCacheSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        upload_workers: int = 2,
        upload_backlog: int = 256,
    ) -> None:
        self.settings = settings
        self.bucket = GuardedBucket(settings, clock)
        self.counters: SharedCounters = self.bucket.counters
        self._uploads = UploadQueue(upload_backlog, upload_workers)
        self._page_jobs = itertools.count()
        self._conditional = True  # If-None-Match: *, until the store says it does not know it

    @property
    def state(self) -> str:
        """closed (healthy), open (degraded, skipping the network) or half-open (probing)."""
        return self.bucket.breaker.state

    @property
    def degraded(self) -> bool:
        return self.bucket.degraded

    @property
    def conditional_writes(self) -> bool:
        """Whether uploads still ask the store to refuse an overwrite (If-None-Match: *):
        True until the store answers that it does not know the header."""
        return self._conditional

    @property
    def reason(self) -> str:
        """Why the tier is degraded, for logs, /ready and the status page; "" when healthy."""
        return self.bucket.breaker.reason if self.degraded else ""

    @property
    def backlog(self) -> int:
        return self._uploads.backlog

    async def open(self) -> None:
        """Connect and check the bucket. No bucket or rejected keys: SharedCacheConfigError.
        An endpoint that does not answer is only a warning: the node serves without the tier
        and the breaker retries it."""
        await self.bucket.open()

    async def close(self) -> None:
        """Stops the upload workers (drain() first to finish the backlog) and disconnects."""
        await self._uploads.close()
        await self.bucket.close()

    # -- files -------------------------------------------------------------------------------

    def file_key(self, sha256: str) -> str:
        return self.settings.key("files", "sha256", sha256[:2], sha256)

    async def has_file(self, sha256: str) -> bool:
        """False when absent, and when the tier cannot tell (an unknown is not a hit)."""
        try:
            await self.bucket.call(lambda: self.bucket.client.head_object(**self._loc(sha256)))
        except (ObjectMissing, TierUnavailable):
            return False
        return True

    def open_file(self, sha256: str, offset: int = 0) -> _OpenFile:
        """async with tier.open_file(sha) as body: None when absent or unavailable, else a
        SharedBody from offset on. The caller checks the sha256 (or uses verified_chunks)."""
        return _OpenFile(self, sha256, offset)

    async def download_verified(self, sha256: str, dest: Path) -> int | None:
        """Copy a shared file to dest, checking its sha256; its size, or None when absent,
        unavailable or corrupt (then dest is removed and the object deleted)."""
        async with self.open_file(sha256) as body:
            if body is None:
                return None
            try:
                with await asyncio.to_thread(open, dest, "wb") as fh:
                    async for chunk in body.verified_chunks():
                        await asyncio.to_thread(fh.write, chunk)
            except SharedTierError:
                await asyncio.to_thread(dest.unlink, True)
                return None
            return body.size

    async def put_file(self, sha256: str, path: Path, size: int) -> bool:
        """Upload a verified local file unless the tier has it; whether it was written. A file
        that has gone from path (evicted locally) is skipped; one opened stays readable."""
        if not SHA256.fullmatch(sha256):
            raise ValueError(f"{sha256!r} is not a sha256 hex digest")
        if await self.has_file(sha256) or self.degraded:
            return False
        try:
            fh = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            return False
        try:
            return await self.upload(sha256, fh, size)
        finally:
            await asyncio.to_thread(fh.close)

    async def upload(self, sha256: str, fh: BinaryIO, size: int) -> bool:
        """Write the open file under its key without first asking whether the tier has it
        (put_file asks); False when another node was first (the store refused to overwrite),
        the tier is unavailable, or the file is not `size` bytes any more."""
        key, s = self.file_key(sha256), self.settings
        small = None if size > s.multipart_threshold else await asyncio.to_thread(fh.read)
        if small is not None and len(small) != size:
            return False  # not the committed file any more

        async def upload(cond: bool) -> None:
            if small is None:
                await put_file_multipart(self.bucket.client, s.bucket, key, fh, s.part_size, cond)
            else:
                await put_object(self.bucket.client, s.bucket, key, small, cond)

        for conditional in (True, False) if self._conditional else (False,):
            try:
                await self.bucket.call(functools.partial(upload, conditional))
            except ClientError as exc:
                if already_exists(exc):
                    return False  # another node was first: the same bytes are there
                log.info("shared cache %s has no conditional writes; writing plainly", s)
                self._conditional = False
                continue
            except (ObjectMissing, TierUnavailable):
                return False
            self.counters.uploads += 1
            self.counters.bytes_written += size
            return True
        return False

    def _loc(self, sha256: str) -> dict[str, str]:
        return {"Bucket": self.settings.bucket, "Key": self.file_key(sha256)}

    # -- pages -------------------------------------------------------------------------------

    def page_key(self, index: str, project: str) -> str:
        return self.settings.key("pages", index, project)

    async def get_page(self, index: str, project: str) -> tuple[bytes, dict[str, Any]] | None:
        """The last page snapshot any node stored, with its meta (etag, last_modified,
        fetched_at, ...), or None."""
        key = self.page_key(index, project)

        async def read() -> bytes:
            answer = await self.bucket.client.get_object(Bucket=self.settings.bucket, Key=key)
            async with answer["Body"] as stream:
                return await stream.read()

        try:
            raw = await self.bucket.call(read)
        except (ObjectMissing, TierUnavailable):
            self.counters.misses += 1
            return None
        header, _, body = raw.partition(b"\n")
        try:
            envelope = json.loads(header)
            meta = envelope["meta"]
            if envelope["format"] != PAGE_FORMAT or not isinstance(meta, dict):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self.counters.errors["corrupt"] += 1
            return None
        self.counters.hits += 1
        self.counters.bytes_read += len(raw)
        return body, meta

    async def put_page(self, index: str, project: str, body: bytes, meta: dict[str, Any]) -> bool:
        """Store a page snapshot: one object, a JSON line of meta and then the page itself, so
        that body and validators are replaced together and survive any store's metadata rules."""
        envelope = json.dumps({"format": PAGE_FORMAT, "meta": meta}, separators=(",", ":"))
        raw = envelope.encode() + b"\n" + body
        key = self.page_key(index, project)
        try:
            await self.bucket.call(
                lambda: put_object(self.bucket.client, self.settings.bucket, key, raw, False)
            )
        except (ObjectMissing, TierUnavailable, ClientError):
            return False
        self.counters.uploads += 1
        self.counters.bytes_written += len(raw)
        return True

    # -- background writes -------------------------------------------------------------------

    def enqueue_file(self, sha256: str, path: Path, size: int) -> bool:
        """Upload in the background; call after the file is verified and committed locally."""
        return self._enqueue(f"file:{sha256}", lambda: self.put_file(sha256, path, size))

    def enqueue_page(self, index: str, project: str, body: bytes, meta: dict[str, Any]) -> bool:
        """Store in the background; call after a page was fetched or revalidated upstream."""
        job = lambda: self.put_page(index, project, body, meta)  # noqa: E731
        # Never merged with a pending write of the same page: the newest snapshot must land.
        return self._enqueue(f"page:{index}/{project}:{next(self._page_jobs)}", job)

    def _enqueue(self, key: str, job: Callable[[], Awaitable[Any]]) -> bool:
        if self.bucket.client is None or (self.degraded and self.bucket.breaker.retry_in > 0):
            self.counters.dropped_uploads += 1
            return False
        if not self._uploads.submit(key, job):
            self.counters.dropped_uploads += 1
            return False
        return True

    async def drain(self) -> None:
        """Until every queued upload has run (tests, shutdown)."""
        await self._uploads.drain()

    # -- maintenance (the CLI's stats, prune and verify) -------------------------------------

    def iter_files(self) -> AsyncIterator[maintenance.SharedObject]:
        return maintenance.iter_objects(self.bucket, self.settings.key("files", "sha256") + "/")

    async def prune_older_than(self, seconds: float) -> maintenance.PruneReport:
        return await maintenance.prune_older_than(self.bucket, seconds)

    async def verify(self, remove: bool = True) -> maintenance.VerifyReport:
        return await maintenance.verify(self, remove)


class _OpenFile:
    def __init__(self, tier: SharedTier, sha256: str, offset: int) -> None:
        self._tier, self._sha256, self._offset = tier, sha256, offset
        self._body: SharedBody | None = None

    async def __aenter__(self) -> SharedBody | None:
        tier = self._tier
        extra = {"Range": f"bytes={self._offset}-"} if self._offset else {}
        try:
            answer = await tier.bucket.call(
                lambda: tier.bucket.client.get_object(**tier._loc(self._sha256), **extra)
            )
        except (ObjectMissing, TierUnavailable):
            tier.counters.misses += 1
            return None
        tier.counters.hits += 1
        self._body = SharedBody(
            tier.bucket, tier.file_key(self._sha256), self._sha256, answer, self._offset
        )
        return self._body

    async def __aexit__(self, *exc_info: object) -> None:
        if self._body is not None:
            self._body.close()

"""Writing to the shared tier: a bounded background queue, and uploads that are atomic.

An object only ever appears under its final key whole: a small one in a single PUT, a large
one by a multipart upload that becomes visible only when it is completed (an interrupted one
is aborted, or left as an incomplete upload that no reader sees). Large files are read part by
part from disk, so an upload holds one part in memory, whatever the file's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from cacheproxy.storage.s3.sdk import ClientError

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[Any]]


class UploadQueue:
    """Jobs run by a few worker tasks, in order; a full queue drops the newest job, since an
    upload is an optimisation that a later fetch of the same file will offer again."""

    def __init__(self, maxsize: int = 256, workers: int = 2) -> None:
        self._queue: asyncio.Queue[tuple[str, Job]] = asyncio.Queue(maxsize)
        self._pending: set[str] = set()
        self._worker_count = workers
        self._workers: list[asyncio.Task] = []

    @property
    def backlog(self) -> int:
        """Jobs queued or running."""
        return len(self._pending)

    def submit(self, key: str, job: Job) -> bool:
        """False when the job was not queued: the same key is pending, or the queue is full."""
        if key in self._pending:
            return True
        try:
            self._queue.put_nowait((key, job))
        except asyncio.QueueFull:
            return False
        self._pending.add(key)
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"shared-upload-{n}")
                for n in range(self._worker_count)
            ]
        return True

    async def _work(self) -> None:
        while True:
            key, job = await self._queue.get()
            try:
                await job()
            except Exception:  # a job reports its own failures; this keeps the worker alive
                log.exception("shared cache upload of %s failed", key)
            finally:
                self._pending.discard(key)
                self._queue.task_done()

    async def drain(self) -> None:
        """Until every job queued so far has run."""
        await self._queue.join()

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []


def conditional_unsupported(exc: ClientError) -> bool:
    """A store that does not know If-None-Match says so with 501 or a 400 naming the header."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(error.get("Code", ""))
    return status == 501 or code in ("NotImplemented", "InvalidArgument") and status == 400


def already_exists(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 412 or error.get("Code") in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
    )


async def put_object(client: Any, bucket: str, key: str, body: bytes, conditional: bool) -> None:
    extra = {"IfNoneMatch": "*"} if conditional else {}
    await client.put_object(Bucket=bucket, Key=key, Body=body, **extra)


async def put_file_multipart(
    client: Any, bucket: str, key: str, fh: BinaryIO, part_size: int, conditional: bool
) -> int:
    """Upload an open file part by part from its start; returns the bytes sent. Raises what
    the store raised, after aborting the upload so that its parts do not linger."""
    await asyncio.to_thread(fh.seek, 0)
    upload = await client.create_multipart_upload(Bucket=bucket, Key=key)
    upload_id = upload["UploadId"]
    parts: list[dict[str, Any]] = []
    sent = 0
    try:
        while chunk := await asyncio.to_thread(fh.read, part_size):
            number = len(parts) + 1
            answer = await client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            sent += len(chunk)
            del chunk  # the next part is read before this one would be released
        extra = {"IfNoneMatch": "*"} if conditional else {}
        await client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **extra
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return sent

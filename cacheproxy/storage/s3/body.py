"""The body of a shared file being read: its size, and its bytes as a stream of chunks."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from cacheproxy.errors import CorruptObject, SharedReadError

if TYPE_CHECKING:
    from cacheproxy.storage.s3.bucket import GuardedBucket

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024


class SharedBody:
    """size: the whole object's size; length: the bytes this body yields (from offset on)."""

    def __init__(
        self, bucket: GuardedBucket, key: str, sha256: str, answer: dict[str, Any], offset: int
    ) -> None:
        self._bucket = bucket
        self._key = key
        self._stream = answer["Body"]
        self.sha256 = sha256
        self.offset = offset
        self.length = int(answer["ContentLength"])
        content_range = answer.get("ContentRange")  # "bytes 10-99/100" for a ranged read
        self.size = int(content_range.rpartition("/")[2]) if content_range else self.length

    async def chunks(self, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        """The bytes as they arrive. Raises SharedReadError (counted) if the store fails."""
        while True:
            try:
                chunk = await self._stream.read(chunk_size)
            except Exception as exc:
                self._bucket.record_failure(exc)
                raise SharedReadError(f"shared read of {self.sha256} failed: {exc}") from None
            if not chunk:
                return
            self._bucket.counters.bytes_read += len(chunk)
            yield chunk

    async def verified_chunks(
        self, chunk_size: int = CHUNK, remove_corrupt: bool = True
    ) -> AsyncIterator[bytes]:
        """chunks(), hashed on the way; raises CorruptObject after the last chunk when the
        bytes do not match the key, counting it and deleting the object unless told not to.
        Whoever streams these on must hold back the end until the check has passed."""
        if self.offset:
            raise ValueError("only a body read from its start can be verified")
        digest = hashlib.sha256()
        async for chunk in self.chunks(chunk_size):
            # hashlib lets go of the GIL on big buffers: a thread keeps the loop free.
            await asyncio.to_thread(digest.update, chunk)
            yield chunk
        actual = digest.hexdigest()
        if actual != self.sha256:
            self._bucket.counters.corrupt += 1
            self._bucket.counters.errors["corrupt"] += 1
            log.warning("shared cache: %s is corrupt (its bytes hash to %s)", self._key, actual)
            if remove_corrupt:
                await self._bucket.delete(self._key)
            raise CorruptObject(self.sha256, actual)

    def close(self) -> None:
        self._stream.close()

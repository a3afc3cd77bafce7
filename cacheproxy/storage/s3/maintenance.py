"""Looking after the shared tier from the command line: list, prune by age, verify.

Pruning is by upload age (LastModified), since a shared object store knows nothing of reads;
a file still in use is uploaded again by the next node that fetches it upstream. An
object-store lifecycle rule (expire after N days, abort incomplete multipart uploads after one)
does the same without a command.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from cacheproxy.errors import CorruptObject, ObjectMissing, SharedTierError, TierUnavailable
from cacheproxy.storage.s3.bucket import GuardedBucket

if TYPE_CHECKING:
    from cacheproxy.storage.s3.tier import SharedTier


@dataclass(frozen=True)
class SharedObject:
    key: str
    size: int
    last_modified: datetime

    @property
    def sha256(self) -> str:
        return self.key.rpartition("/")[2]


@dataclass
class PruneReport:
    removed: int = 0
    bytes: int = 0
    aborted_uploads: int = 0


@dataclass
class VerifyReport:
    checked: int = 0
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)  # sha256 of each corrupt object
    removed: int = 0


async def _call(bucket: GuardedBucket, make):
    """A maintenance command reports an unusable tier instead of carrying on without it."""
    try:
        return await bucket.call(make)
    except (ObjectMissing, TierUnavailable):
        raise SharedTierError(
            f"shared cache {bucket.settings} is unavailable: {bucket.breaker.reason}"
        ) from None


async def iter_objects(bucket: GuardedBucket, prefix: str) -> AsyncIterator[SharedObject]:
    token: dict[str, str] = {}
    while True:
        page = await _call(
            bucket,
            lambda token=token: bucket.client.list_objects_v2(
                Bucket=bucket.settings.bucket, Prefix=prefix, **token
            ),
        )
        for item in page.get("Contents", []):
            yield SharedObject(item["Key"], int(item["Size"]), item["LastModified"])
        if not page.get("IsTruncated"):
            return
        token = {"ContinuationToken": page["NextContinuationToken"]}


async def prune_older_than(bucket: GuardedBucket, seconds: float) -> PruneReport:
    """Delete files and pages uploaded more than seconds ago, and abort multipart uploads
    started that long ago (left by a node that died mid-upload)."""
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=seconds)
    report = PruneReport()
    root = bucket.settings.key("")  # "PREFIX/", or "" at the bucket root
    for section in ("files/", "pages/"):
        async for obj in iter_objects(bucket, root + section):
            if obj.last_modified < cutoff and await bucket.delete(obj.key):
                report.removed += 1
                report.bytes += obj.size
    uploads = await _call(
        bucket,
        lambda: bucket.client.list_multipart_uploads(Bucket=bucket.settings.bucket, Prefix=root),
    )
    for upload in uploads.get("Uploads", []):
        if upload["Initiated"] < cutoff:
            await _call(
                bucket,
                lambda upload=upload: bucket.client.abort_multipart_upload(
                    Bucket=bucket.settings.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                ),
            )
            report.aborted_uploads += 1
    return report


async def verify(tier: SharedTier, remove: bool = True) -> VerifyReport:
    """Re-hash every shared file against its key; report corrupt ones, deleting them if told.
    An object whose name is not a sha256 counts as corrupt too: no reader could check it."""
    report = VerifyReport()
    async for obj in tier.iter_files():
        report.checked += 1
        report.bytes += obj.size
        sha256 = obj.sha256
        if len(sha256) != 64 or sha256.strip("0123456789abcdef"):
            report.corrupt.append(sha256)
            if remove and await tier.bucket.delete(obj.key):
                report.removed += 1
            continue
        async with tier.open_file(sha256) as body:
            if body is None:
                continue  # deleted meanwhile, or the tier failed (counted)
            try:
                async for _ in body.verified_chunks(remove_corrupt=remove):
                    pass
            except CorruptObject:
                report.corrupt.append(sha256)
                report.removed += int(remove)
    return report

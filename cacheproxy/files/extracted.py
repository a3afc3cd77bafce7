"""Metadata the proxy reads out of wheels it cached, for indexes that give none (PEP 658)."""

from __future__ import annotations

import asyncio
import hashlib
import logging

from cacheproxy.errors import NoMetadata
from cacheproxy.protocol.metadata import extract_metadata
from cacheproxy.storage.port import FilesWithFacts

log = logging.getLogger(__name__)


async def extract_and_store(
    store: FilesWithFacts, project: str, wheel: str, path: str
) -> bytes | None:
    """Extract a cached wheel's METADATA into the store; None if the wheel has none usable.
    Metadata served before (read from the wheel's tail) must be what the whole wheel holds: if
    not, that is said loudly and the whole wheel's replaces it, advertised hash included."""
    try:
        data = await asyncio.to_thread(extract_metadata, path, wheel)
    except (NoMetadata, OSError) as exc:
        log.warning("no metadata extracted from %s: %s", wheel, exc)
        return None
    digest = hashlib.sha256(data).hexdigest()
    served = (await store.file_facts(project)).get(wheel, {}).get("metadata-sha256")
    if served == digest and await store.find_file(project, wheel + ".metadata") is not None:
        return data  # already stored, and the same
    if served and served != digest:
        log.warning(
            "METADATA of %s differs from the metadata served for it: served sha256 %s, "
            "the whole wheel's sha256 %s; replacing it",
            wheel,
            served,
            digest,
        )
    await store.put_extracted_metadata(project, wheel, data, digest)
    return data

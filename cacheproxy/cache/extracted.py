"""Metadata the proxy reads out of wheels it cached, for indexes that give none (PEP 658)."""

from __future__ import annotations

import asyncio
import hashlib
import logging

from cacheproxy.simple.metadata import NoMetadata, extract_metadata
from cacheproxy.store.local import Store

log = logging.getLogger(__name__)


async def extract_and_store(store: Store, project: str, wheel: str, path: str) -> bytes | None:
    """Extract a cached wheel's METADATA into the store; None if the wheel has none usable."""
    try:
        data = await asyncio.to_thread(extract_metadata, path, wheel)
        await store.put_extracted_metadata(project, wheel, data, hashlib.sha256(data).hexdigest())
        return data
    except (NoMetadata, OSError) as exc:
        log.warning("no metadata extracted from %s: %s", wheel, exc)
        return None

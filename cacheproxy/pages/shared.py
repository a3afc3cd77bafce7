"""Pages and the shared tier: every page fetched or revalidated is offered to the fleet, and a
node that has no copy of a page looks for another node's before asking the upstream.

The upstream's own bytes are not kept (a page is stored parsed), so a snapshot is the parsed
page in a stable JSON form: PEP 691 data as clients see it, plus where each file really lives.
The validators and the wall-clock fetch time travel in the object's meta, so a reader can judge
its age by its own TTL and revalidate it with ETag/Last-Modified.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from cacheproxy.protocol.compact import CompactPage, expand
from cacheproxy.protocol.page import ProjectPage
from cacheproxy.protocol.parse import FileHosts
from cacheproxy.storage.records import CachedPage
from cacheproxy.storage.s3.tier import SharedTier

log = logging.getLogger(__name__)
MAIN_INDEX = "_main"


def encode(entry: CachedPage) -> tuple[bytes, dict[str, Any]]:
    assert entry.page is not None
    page = expand(entry.page)  # the snapshot's form is the expanded page's, for every node
    body = json.dumps(
        {"data": page.data, "origins": page.origins},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    meta = {
        "etag": entry.etag,
        "last_modified": entry.last_modified,
        "fetched_at": entry.fetched_at,
    }
    return body, meta


def decode(body: bytes, meta: dict[str, Any], hosts: FileHosts) -> CachedPage | None:
    """The snapshot as a stored page, or None when it is not one this node can use: unreadable,
    a file without an origin, or an origin this node's file hosts do not allow."""
    try:
        snapshot = json.loads(body)
        data, origins = snapshot["data"], snapshot["origins"]
        fetched_at = float(meta["fetched_at"])
        names = [entry["filename"] for entry in data["files"]]
        if not isinstance(data["name"], str) or not all(
            isinstance(origins.get(name), str) for name in names
        ):
            return None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if any(hosts.refusal(url) for url in origins.values()):
        return None
    return CachedPage(
        status=200,
        page=CompactPage.of(ProjectPage(data, origins)),
        fetched_at=fetched_at,
        etag=_text(meta.get("etag")),
        last_modified=_text(meta.get("last_modified")),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class SharedPages:
    def __init__(self, tier: SharedTier, index: str, hosts: FileHosts) -> None:
        self.tier = tier
        self.index = index
        self._hosts = hosts

    async def offer(self, project: str, entry: CachedPage) -> None:
        """Queue a page just fetched or revalidated upstream. Only pages of projects that
        exist: a "no such project" is cheap to ask again and may change any minute."""
        if entry.status != 200 or entry.page is None:
            return
        body, meta = await asyncio.to_thread(encode, entry)
        self.tier.enqueue_page(self.index, project, body, meta)

    async def snapshot(self, project: str) -> CachedPage | None:
        """The page another node stored, of whatever age; None when there is none usable."""
        found = await self.tier.get_page(self.index, project)
        if found is None:
            return None
        # A page of thousands of files takes a while to parse: not on the event loop.
        entry = await asyncio.to_thread(decode, *found, self._hosts)
        if entry is None:
            self.tier.counters.errors["bad_page"] += 1
            log.warning("shared page of %s is unusable; asking the upstream", project)
        return entry

"""Every key the app and its requests carry, in one place."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from cacheproxy.compose import SharedTiers
from cacheproxy.config import Config
from cacheproxy.files.service import FileService
from cacheproxy.jsonapi.service import JsonApiService
from cacheproxy.ops.metrics import Metrics
from cacheproxy.pages.service import PageService
from cacheproxy.prefetch.lookahead import Lookahead
from cacheproxy.storage.disk import DiskSpace
from cacheproxy.storage.local import Store
from cacheproxy.storage.s3.tier import SharedTier

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey[Callable[[], float]]("clock")
STORE = web.AppKey("store", Store)
DISK = web.AppKey("disk", DiskSpace)
# Free space DiskSpace keeps beyond a file's size (DISK_RESERVE unless a test sets it).
DISK_RESERVE_BYTES = web.AppKey("disk_reserve", int)
PAGES = web.AppKey("pages", PageService)
FILES = web.AppKey("files", FileService)
JSON_API = web.AppKey("json_api", JsonApiService)
LOOKAHEAD = web.AppKey("lookahead", Lookahead)
METRICS = web.AppKey("metrics", Metrics)
STARTED_AT = web.AppKey("started_at", float)
# The sub-application of each named index, by name (the main index is the root app itself).
NAMED_INDEXES = web.AppKey("named_indexes", dict[str, web.Application])
# This index's shared tier (absent without one), and the registry every index takes it from.
SHARED = web.AppKey("shared", SharedTier)
SHARED_TIERS = web.AppKey("shared_tiers", SharedTiers)

# How the cache answered (hit, miss, coalesced, stale...), for the access log and metrics.
CACHE_OUTCOME = web.RequestKey("cache_outcome", str)
# Size of a whole file served from the store, known before sendfile runs (for metrics).
STORED_SIZE = web.RequestKey("stored_size", int)

"""The bucket behind the shared tier, every call to it guarded by one circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

from cacheproxy.config import SharedCacheSettings
from cacheproxy.errors import (
    ObjectMissing,
    SharedCacheConfigError,
    SharedCacheExtraMissing,
    TierUnavailable,
)
from cacheproxy.storage.s3.breaker import CLOSED, CircuitBreaker, SharedCounters
from cacheproxy.storage.s3.sdk import BotoCoreError, ClientError, NoCredentialsError
from cacheproxy.storage.s3.uploads import already_exists, conditional_unsupported

log = logging.getLogger("cacheproxy.storage.s3.tier")
T = TypeVar("T")


def _status(exc: ClientError) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        status = _status(exc) or 0
        code = exc.response.get("Error", {}).get("Code")
        if status in (401, 403):
            return "denied"
        if status == 429 or code == "SlowDown":
            return "throttled"
        if status >= 500:
            return "server"
        return "other"
    name = type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError) or "Timeout" in name:
        return "timeout"
    if isinstance(exc, (aiohttp.ClientError, OSError)) or "Connection" in name:
        return "connection"
    return "other"


def _describe(exc: BaseException) -> str:
    """One line about a failure; botocore's messages name the endpoint, never the keys."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class GuardedBucket:
    def __init__(
        self, settings: SharedCacheSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.counters = SharedCounters()
        self.breaker = CircuitBreaker(settings.failure_threshold, settings.cooldown, clock)
        self._stack = contextlib.AsyncExitStack()
        self.client: Any = None

    @property
    def degraded(self) -> bool:
        return self.breaker.state != CLOSED

    # -- life cycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and check the bucket. No bucket or rejected keys: SharedCacheConfigError.
        An endpoint that does not answer is only a warning: the node serves without the tier
        and the breaker retries it."""
        # Here, not at the top: the client's modules are 10 MiB of a process's memory, and a
        # node without a shared tier never needs them (nor installs them: the s3 extra).
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
        except ImportError:
            raise SharedCacheExtraMissing from None

        s = self.settings
        config = AioConfig(
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            retries={"total_max_attempts": 1},  # the breaker retries, not every request
            s3={"addressing_style": "path" if s.endpoint else "auto"},
            # Object stores other than AWS reject the newer default checksum headers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=32,
        )
        self.client = await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                region_name=s.region,
                endpoint_url=s.endpoint,
                aws_access_key_id=s.access_key_id,
                aws_secret_access_key=s.secret_access_key,
                aws_session_token=s.session_token,
                config=config,
            )
        )
        try:
            await self.client.head_bucket(Bucket=s.bucket)
        except ClientError as exc:
            if _status(exc) == 404:
                await self.close()
                raise SharedCacheConfigError(f"shared cache {s}: no such bucket") from None
            if _status(exc) in (401, 403):
                await self.close()
                raise SharedCacheConfigError(
                    f"shared cache {s}: access denied (keys rejected, or not allowed this bucket)"
                ) from None
            self._unreachable(exc)
        except NoCredentialsError:
            await self.close()
            raise SharedCacheConfigError(f"shared cache {s}: no credentials found") from None
        except (BotoCoreError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            self._unreachable(exc)
        else:
            log.info("shared cache %s", s)

    def _unreachable(self, exc: BaseException) -> None:
        self.counters.errors[error_kind(exc)] += 1
        self.breaker.trip(f"unreachable at start: {_describe(exc)}")
        log.warning(
            "shared cache %s does not answer (%s); serving without it until it does",
            self.settings,
            _describe(exc),
        )

    async def close(self) -> None:
        await self._stack.aclose()
        self.client = None

    # -- one guarded call --------------------------------------------------------------------

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run one store operation under the breaker. Raises ObjectMissing on a 404, TierUnavailable
        when skipped or failed, and ClientError only for the answers a write handles itself
        (the object exists; the store lacks conditional writes)."""
        if self.client is None or not self.breaker.allow():
            self.counters.skipped += 1
            raise TierUnavailable
        self.counters.requests += 1
        try:
            result = await make()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if _status(exc) == 404 and code != "NoSuchBucket":
                self.breaker.success()
                raise ObjectMissing from None
            if already_exists(exc) or conditional_unsupported(exc):
                self.breaker.success()
                raise
            self.record_failure(exc)
            raise TierUnavailable from None
        except (BotoCoreError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            self.record_failure(exc)
            raise TierUnavailable from None
        except BaseException:
            self.breaker.abandon()  # cancelled: let another call probe
            raise
        self.breaker.success()
        return result

    def record_failure(self, exc: BaseException) -> None:
        kind = error_kind(exc)
        self.counters.errors[kind] += 1
        was_closed = self.breaker.state == CLOSED
        self.breaker.failure(f"{kind}: {_describe(exc)}")
        if was_closed and self.degraded:
            log.warning("shared cache degraded: %s", self.breaker.reason)

    async def delete(self, key: str) -> bool:
        try:
            await self.call(lambda: self.client.delete_object(Bucket=self.settings.bucket, Key=key))
        except (ObjectMissing, TierUnavailable):
            return False
        return True

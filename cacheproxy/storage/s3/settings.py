"""Where the shared tier lives: an S3 bucket and prefix, the endpoint, region and keys."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL


class SharedCacheError(ValueError):
    """A shared-cache setting that cannot be used; one line, never with a secret in it."""


class SharedCacheConfigError(SharedCacheError):
    """The object store answered, and said no: no such bucket, or the keys were rejected."""


EXTRA = "s3"
CLIENT = "aiobotocore"  # the library that extra installs


class SharedCacheExtraMissing(SharedCacheError):
    """A shared cache is configured, but the S3 client library (the s3 extra) is not installed."""

    def __init__(self) -> None:
        super().__init__(
            f"the shared cache needs the {EXTRA} extra: pip install 'cacheproxy-server[{EXTRA}]'"
        )


def require_client() -> None:
    """Raises SharedCacheExtraMissing without the client library; imports nothing of it."""
    try:
        found = importlib.util.find_spec(CLIENT) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise SharedCacheExtraMissing


# S3's rule for new buckets, less the rarely used dotted names that break TLS virtual hosting.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9!_.*'()-]+")

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class SharedCacheSettings:
    bucket: str
    prefix: str = ""  # without slashes at either end; "" for the bucket's root
    endpoint: str | None = None  # None: the provider's own endpoint for the region
    region: str = DEFAULT_REGION
    access_key_id: str | None = dataclasses.field(default=None, repr=False)
    # None for both keys: the SDK's own chain (profile, instance role, web identity).
    secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    multipart_threshold: int = 8 * 1024 * 1024
    part_size: int = 5 * 1024 * 1024  # the smallest part S3 accepts: bounds the memory per upload
    failure_threshold: int = 5  # consecutive failures that open the breaker
    cooldown: float = 30.0  # seconds the breaker stays open before one probe

    @classmethod
    def from_url(
        cls,
        url: str,
        environ: Mapping[str, str] | None = None,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        **tuning: float,
    ) -> SharedCacheSettings:
        """s3://BUCKET[/PREFIX]; the keywords are the config file's values, and the standard
        AWS environment variables beat them, as the environment beats the file everywhere."""
        env = os.environ if environ is None else environ
        bucket, prefix = parse_s3_url(url)
        require_client()  # checked with the settings, so that `serve` refuses before it binds
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or endpoint
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or region
        if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_SECRET_ACCESS_KEY"):
            access_key_id = env.get("AWS_ACCESS_KEY_ID")
            secret_access_key = env.get("AWS_SECRET_ACCESS_KEY")
            session_token = env.get("AWS_SESSION_TOKEN")
        if (access_key_id is None) != (secret_access_key is None):
            raise SharedCacheError("shared cache: give both the access key id and the secret key")
        return cls(
            bucket=bucket,
            prefix=prefix,
            endpoint=parse_endpoint(endpoint) if endpoint else None,
            region=region or DEFAULT_REGION,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            **tuning,
        )

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def __str__(self) -> str:
        """For logs and status pages: where, never with which keys."""
        where = self.endpoint or f"region {self.region}"
        return f"{self.url} at {where}"


def parse_s3_url(url: str) -> tuple[str, str]:
    text = str(url).strip()
    if not text.startswith("s3://"):
        raise SharedCacheError(f"shared cache {text!r} is not an s3://BUCKET[/PREFIX] URL")
    bucket, _, prefix = text[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise SharedCacheError(
            f"shared cache bucket {bucket!r} is not a bucket name "
            "(3-63 lowercase letters, digits, dots and dashes)"
        )
    parts = [part for part in prefix.split("/") if part]
    if any(not _PREFIX_PART.fullmatch(part) or part in (".", "..") for part in parts):
        raise SharedCacheError(f"shared cache prefix {prefix!r} has characters S3 keys avoid")
    return bucket, "/".join(parts)


def parse_endpoint(value: str) -> str:
    url = URL(str(value).strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise SharedCacheError("shared cache endpoint must be an http:// or https:// URL")
    if url.user or url.password:
        raise SharedCacheError("shared cache endpoint must not carry credentials; use the keys")
    return str(url.with_path(url.path.rstrip("/"))).rstrip("/")

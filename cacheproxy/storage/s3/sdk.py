"""botocore's exception types, which the tier's modules catch, with or without the s3 extra.

The S3 client library is an optional extra (`pip install 'cacheproxy-server[s3]'`). Without
it these are stand-ins that nothing raises: the tier's modules still import (every node loads
them) and the `except` clauses that name them never match. Only opening a tier needs the
library, and config.require_client says in one line which extra is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
else:
    try:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    except ImportError:  # without the extra: types that nothing can raise

        class BotoCoreError(Exception):
            pass

        class ClientError(Exception):
            response: dict = {}

        class NoCredentialsError(BotoCoreError):
            pass


__all__ = ["BotoCoreError", "ClientError", "NoCredentialsError"]

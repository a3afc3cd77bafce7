"""Optional client authentication: a token as the password of HTTP Basic auth (what pip and uv
send from user:token@ in the index URL) or as a Bearer token."""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

# Orchestrators probe liveness without credentials.
_OPEN_PATHS = frozenset({"/health"})
CHALLENGE = {"WWW-Authenticate": 'Basic realm="cacheproxy", charset="UTF-8"'}


def presented_token(header: str | None) -> bytes | None:
    """The token in an Authorization header, as bytes: a header is bytes on the wire, and any
    of them (latin-1, invalid UTF-8) must end in a 401, never in a decoding error."""
    if not header:
        return None
    # aiohttp hands over undecodable header bytes as surrogates; this gives them back.
    raw = header.encode("utf-8", "surrogateescape")
    scheme, _, value = raw.partition(b" ")
    if scheme.lower() == b"bearer":
        return value.strip() or None
    if scheme.lower() == b"basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except binascii.Error:
            return None
        return decoded.partition(b":")[2] or None
    return None


def token_allowed(token: bytes | None, tokens: frozenset[str]) -> bool:
    if token is None:
        return False
    # Compare against every token in constant time, so timing tells nothing.
    return any(hmac.compare_digest(token, t.encode()) for t in tokens)


def require_token(tokens: frozenset[str]):
    @web.middleware
    async def check(request: web.Request, handler) -> web.StreamResponse:
        if request.path not in _OPEN_PATHS:
            token = presented_token(request.headers.get("Authorization"))
            if not token_allowed(token, tokens):
                reason = "credentials required" if token is None else "unknown token"
                raise web.HTTPUnauthorized(text=f"{reason}\n", headers=CHALLENGE)
        return await handler(request)

    return check

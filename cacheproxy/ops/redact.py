"""Credentials out of anything that is logged or shown: URL userinfo and the values of the
request headers that carry secrets."""

from __future__ import annotations

import re

# scheme://userinfo@ : the userinfo runs to the last @ before the path, query or fragment,
# which is where URL parsers end it too.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")
# A header line in raw request bytes, or in their repr (where a line ends with a literal \r
# or \n, so "\nCookie" has no word boundary): the value runs to the end of the line.
_SECRET_HEADER = re.compile(
    r"(?i)(?:(?<=\\[rn])|(?<![\w-]))(authorization|proxy-authorization|cookie|set-cookie)(\s*:\s*)"
    r"(?:[^\r\n\\]|\\(?![rn]))*"
)
# The credentials of an auth scheme, where the header name is not shown beside them.
_SCHEME_CREDENTIALS = re.compile(r"(?i)\b(basic|bearer|digest|negotiate|ntlm)\s+[\w.~+/=-]+")
REDACTED = "***"


def redact_url(text: str) -> str:
    """The URL (or any text holding URLs) with each userinfo replaced by ***."""
    return _USERINFO.sub(rf"\g<1>{REDACTED}@", text)


def redact_request(text: str) -> str:
    """Text made from raw request bytes (a parser's error, a request line) with the values of
    Authorization, Proxy-Authorization and Cookie headers, any auth scheme's credentials and
    URL userinfo replaced by ***."""
    text = _SECRET_HEADER.sub(rf"\g<1>\g<2>{REDACTED}", text)
    text = _SCHEME_CREDENTIALS.sub(rf"\g<1> {REDACTED}", text)
    return redact_url(text)

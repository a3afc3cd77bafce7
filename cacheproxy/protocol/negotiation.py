"""PEP 691 content negotiation between the Simple API's JSON and HTML forms."""

from __future__ import annotations

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
HTML_LEGACY = "text/html"
SUPPORTED = (JSON_V1, HTML_V1, HTML_LEGACY)

# At equal q for explicitly named types, serve the richest form.
_PREFERENCE = {JSON_V1: 2, HTML_V1: 1, HTML_LEGACY: 0}


def _parse_accept(header: str) -> list[tuple[str, float]]:
    ranges = []
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((media, min(max(q, 0.0), 1.0)))
    return ranges


def _match(media_range: str, content_type: str) -> int:
    """How specifically a media range matches: 2 exact, 1 type/*, 0 */*, -1 not at all."""
    if media_range == content_type:
        return 2
    major = content_type.split("/")[0]
    if media_range == f"{major}/*":
        return 1
    if media_range == "*/*":
        return 0
    return -1


def choose_content_type(accept: str | None, format_param: str | None = None) -> str | None:
    """The content type to answer with, or None when the client accepts none of ours (406)."""
    if format_param:
        return format_param if format_param in SUPPORTED else None
    if not accept or not accept.strip():
        return HTML_LEGACY
    ranges = _parse_accept(accept)
    best: tuple[float, int, int] | None = None
    chosen = None
    for content_type in SUPPORTED:
        matches = [(_match(r, content_type), q) for r, q in ranges]
        matches = [m for m in matches if m[0] >= 0]
        if not matches:
            continue
        specificity, q = max(matches)  # the most specific range decides the q-value
        if q <= 0:
            continue
        # A client that only says */* gets what the index serves by default: HTML.
        preference = _PREFERENCE[content_type] if specificity > 0 else -_PREFERENCE[content_type]
        score = (q, specificity, preference)
        if best is None or score > best:
            best, chosen = score, content_type
    return chosen

"""The one JSON pages are stored and served in: compact separators, UTF-8 as it is (json.dumps
with separators=(",", ":") and ensure_ascii=False), one line per value. A page's entries are
encoded by orjson where its bytes are those, the standard library's encoder otherwise."""

from __future__ import annotations

import json
from typing import Any

import orjson

# Made once: JSONEncoder.encode makes a new C encoder per call, which cost more than the
# encoding of a file's entry, and a page of thousands of files is thousands of calls. The C
# encoder is the one json.dumps itself uses; _ENCODE is for the rest (and where there is no C
# accelerator).
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_ENCODE_STRING = json.encoder.encode_basestring  # ensure_ascii=False's


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C accelerator's factory is not in the standard library's type stubs.
_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_ENCODE_OBJECT = (
    None
    if _MAKE_ENCODER is None
    else _MAKE_ENCODER(None, _not_json, _ENCODE_STRING, None, ":", ",", False, False, True)
)


def encode_json(value: Any) -> bytes:
    """A value as one line of the canonical JSON pages are stored and served in."""
    if _ENCODE_OBJECT is not None and type(value) is dict:
        return "".join(_ENCODE_OBJECT(value, 0)).encode()
    return _ENCODE(value).encode()


def encode_texts(entries: list[dict[str, Any]], floats: bool = True) -> list[bytes]:
    """encode_json() of each entry. Entries without a float among them (floats: False) are
    encoded by one call of orjson for them all, whose bytes are then json.dumps's, in a third
    of the standard library's time for a page of thousands of files."""
    if not floats:
        inner = _orjson_inner(entries, b"},{")
        if inner is not None:
            return [b"{" + part + b"}" for part in inner]
    return list(map(encode_json, entries))


def encode_strings(strings: list[str]) -> list[bytes]:
    """encode_json() of each string."""
    inner = _orjson_inner(strings, b'","')
    if inner is None:
        return list(map(encode_json, strings))
    return [b'"' + part + b'"' for part in inner]


def _orjson_inner(values: list[Any], between: bytes) -> list[bytes] | None:
    """orjson's encoding of a non-empty list of dicts or strings, less its brackets, cut where
    `between` parts two of them (b"},{" for dicts, b'","' for strings), each less the outer
    character on either side; None when it is not orjson's to write (a number past 64 bits, a
    lone surrogate) or when `between` shows inside a value too. A single orjson.dumps() of
    each value would not do: each result keeps a 4 KB buffer."""
    if not values:
        return None
    try:
        joined = orjson.dumps(values)
    except orjson.JSONEncodeError:
        return None
    inner = joined[2:-2].split(between)
    # The values' own boundaries make len(values) parts; any more is `between` in a value.
    return inner if len(inner) == len(values) else None

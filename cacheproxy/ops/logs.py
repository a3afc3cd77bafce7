"""Logging set-up: plain text for people, one JSON object per line for log shippers.

Every record is one physical line in either format: a newline in a message (a parser's error
quoting raw bytes, a traceback) is escaped, so a log line cannot be forged or split.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# Fields the access log attaches to its records, copied into JSON lines as they are.
ACCESS_FIELDS = ("method", "path", "status", "outcome", "bytes", "ms")
# What splits a line for a terminal or a log tool: C0 and C1 controls (tab aside), DEL and the
# Unicode line separators.
_LINE_BREAKING = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r"}
# What json.dumps leaves unescaped of those.
_JSON_LINE_BREAKING = re.compile("[\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def one_line(text: str) -> str:
    return _LINE_BREAKING.sub(_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ACCESS_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        # json escapes C0 controls itself; the rest become \u escapes of the same value.
        return _JSON_LINE_BREAKING.sub(_json_escape, json.dumps(line, ensure_ascii=False))


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

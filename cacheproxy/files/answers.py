"""What the file service answers: a small value the web layer turns into a response.

The service decides (which bytes, from where, with what status); the web layer only speaks
HTTP. Every answer carries its conditional/range `Decision`; a bodiless one (304, 412, 416)
carries nothing else to send.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypedDict

from cacheproxy.files.ranges import Decision, Outcome
from cacheproxy.pages.visibility import Refused


@dataclass(frozen=True)
class FileRequest:
    """What a client asked for, in plain terms."""

    method: str
    headers: Mapping[str, str]


class Body(Protocol):
    """Bytes to stream; raising an UpstreamError mid-way means the transfer must be cut off."""

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Answer:
    outcome: str  # how the cache answered: hit, miss, coalesced, uncached, miss-range...
    filename: str
    decision: Decision
    total: int | None  # the whole file's length, when known
    etag: str | None = None
    last_modified: float | None = None

    @property
    def has_body(self) -> bool:
        return self.decision.outcome in (Outcome.WHOLE, Outcome.PARTIAL)

    @property
    def length(self) -> int | None:
        """How many bytes the body holds, when known."""
        end = self.decision.end if self.decision.end is not None else self.total
        return None if end is None else end - self.decision.start


@dataclass(frozen=True)
class FromStore(Answer):
    """A stored file, sent from its path (sendfile)."""

    path: str = ""


@dataclass(frozen=True)
class InMemory(Answer):
    """A small answer already in memory: a shared range, extracted metadata."""

    data: bytes = b""


@dataclass(frozen=True)
class Streamed(Answer):
    """Bytes that arrive as they are sent: a running download, a relay of the upstream."""

    body: Body | None = None


class AnswerFields(TypedDict):
    """The fields the answers one request may get share, passed on as **fields."""

    filename: str
    decision: Decision
    total: int | None


@dataclass(frozen=True)
class NotFound:
    reason: str
    outcome: str | None = None


FileAnswer = FromStore | InMemory | Streamed | Answer | NotFound | Refused

"""The cached value: one stored answer, and a recorder that builds one from a stream.

A `CachedResponse` keeps the answer as the chunks it was streamed in (a JSON answer is one
chunk), so a hit can be replayed as a stream with the same pieces, or joined into one text.
It also keeps what the original generation used and cost, so every hit can report the cost it
saved.

`StreamRecorder` collects a stream's text deltas while they are passed on to the client. It
stops recording once the text passes its byte limit and says so (`overflowed`); the caller then
does not cache that stream, and the recorder has already let go of what it held, so one huge
stream cannot pile up in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hybridroute.types import RouteId, Usage

__all__ = ["ENTRY_OVERHEAD_BYTES", "CachedResponse", "StreamRecorder"]

ENTRY_OVERHEAD_BYTES = 512
"""What one entry costs besides its text, as a flat estimate: the Python objects around the
strings (the entry, its tuple of chunks, `Usage`, `Decimal`), the 64-character key, the store's
node and LRU link, and the tag index sets. Deliberately generous; it makes a flood of tiny
entries count against the byte cap too."""


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """One stored answer and what producing it took."""

    chunks: tuple[str, ...]  # the answer's text as streamed (one chunk for a JSON answer)
    model: str  # the model that answered
    finish_reason: str
    usage: Usage  # token usage of the original generation
    route: RouteId  # the route that produced it
    region: str | None  # that route's region, when it has one
    cost: Decimal  # what the original generation cost: what each hit saves
    created_at: float  # wall-clock seconds (`Clock.now()`) when it was stored

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def size_bytes(self) -> int:
        """Approximate memory footprint: UTF-8 bytes of the chunks, the model and the finish
        reason, plus `ENTRY_OVERHEAD_BYTES`."""
        text_bytes = sum(_utf8_len(chunk) for chunk in self.chunks)
        return (
            text_bytes
            + _utf8_len(self.model)
            + _utf8_len(self.finish_reason)
            + ENTRY_OVERHEAD_BYTES
        )


class StreamRecorder:
    """Records a stream's text deltas, up to `max_bytes` of UTF-8 text.

    Empty deltas are not recorded (they change nothing on replay). When a delta would take the
    recorded text past `max_bytes`, the recorder drops everything it holds, sets `overflowed`,
    and ignores further deltas; `finish()` then refuses to build an entry. The store makes its
    own size check (`max_entry_bytes`, which also counts the model, the finish reason and the
    fixed overhead) when the entry is put.
    """

    __slots__ = ("_bytes", "_chunks", "_max_bytes", "_overflowed")

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self._max_bytes = max_bytes
        self._chunks: list[str] = []
        self._bytes = 0
        self._overflowed = False

    @property
    def overflowed(self) -> bool:
        """True once the stream passed `max_bytes`: it must not be cached."""
        return self._overflowed

    @property
    def recorded_bytes(self) -> int:
        """UTF-8 bytes recorded so far (0 after an overflow)."""
        return self._bytes

    def add(self, text: str) -> None:
        """Record one text delta, in stream order."""
        if self._overflowed or not text:
            return
        size = _utf8_len(text)
        if self._bytes + size > self._max_bytes:
            self._overflowed = True
            self._chunks = []
            self._bytes = 0
            return
        self._chunks.append(text)
        self._bytes += size

    def finish(
        self,
        model: str,
        finish_reason: str,
        usage: Usage,
        route: RouteId,
        region: str | None,
        cost: Decimal,
        created_at: float,
    ) -> CachedResponse:
        """The entry for the recorded stream. Raises `RuntimeError` after an overflow: check
        `overflowed` first and do not cache such a stream."""
        if self._overflowed:
            raise RuntimeError(
                f"the stream passed the {self._max_bytes}-byte recording limit; not cacheable"
            )
        return CachedResponse(
            chunks=tuple(self._chunks),
            model=model,
            finish_reason=finish_reason,
            usage=usage,
            route=route,
            region=region,
            cost=cost,
            created_at=created_at,
        )

    def __repr__(self) -> str:
        state = "overflowed" if self._overflowed else f"{self._bytes}/{self._max_bytes} bytes"
        return f"<StreamRecorder {len(self._chunks)} chunks, {state}>"

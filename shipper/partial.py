"""Joining a container line that the runtime split into pieces.

CRI writes ``P`` pieces ended by an ``F``; Docker's json-file writes records
whose ``log`` lacks the trailing newline until the last piece. Both become
``RuntimeLine``s, joined here per stream (stdout and stderr never mix), keeping
at most ``max_bytes`` of a record: the rest is dropped and the record flagged.
Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RuntimeLine:
    time_ns: int
    stream: str
    partial: bool
    text: bytes


@dataclass(slots=True)
class Joined:
    """One complete container line: its first piece's offset and time, its text, and the offset
    just past its last piece (pieces of the other stream may sit in between)."""

    offset: int
    end: int
    time_ns: int
    stream: str
    text: bytes
    truncated: bool = False


@dataclass(slots=True)
class _Pending:
    offset: int
    end: int
    time_ns: int
    pieces: list[bytes] = field(default_factory=list)
    size: int = 0
    truncated: bool = False


class PartialJoiner:
    """Joins P…P…F sequences per stream, keeping at most ``max_bytes`` of a record
    (the rest is dropped and the record flagged truncated)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._pending: dict[str, _Pending] = {}

    def oldest_pending_offset(self) -> int | None:
        """Offset a checkpoint must not pass: a partial record still being assembled."""
        return min((p.offset for p in self._pending.values()), default=None)

    def _append(self, p: _Pending, text: bytes) -> None:
        room = self.max_bytes - p.size
        if len(text) > room:
            text = text[:max(room, 0)]
            p.truncated = True
        if text:
            p.pieces.append(text)
            p.size += len(text)

    def feed(self, offset: int, end: int, line: RuntimeLine) -> Joined | None:
        """One runtime line occupying bytes [offset, end) of the file."""
        p = self._pending.get(line.stream)
        if p is None:
            if not line.partial and len(line.text) <= self.max_bytes:
                return Joined(offset, end, line.time_ns, line.stream, line.text)
            p = _Pending(offset, end, line.time_ns)
        self._append(p, line.text)
        p.end = end
        if line.partial:
            self._pending[line.stream] = p
            return None
        self._pending.pop(line.stream, None)
        return Joined(p.offset, p.end, p.time_ns, line.stream, b"".join(p.pieces), p.truncated)

    def drain(self) -> list[Joined]:
        """Give up on unfinished records (the file ended for good): emit what we have."""
        out = [Joined(p.offset, p.end, p.time_ns, s, b"".join(p.pieces), p.truncated)
               for s, p in sorted(self._pending.items(), key=lambda kv: kv[1].offset)]
        self._pending.clear()
        return out

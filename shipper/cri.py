"""Kubernetes CRI log lines: ``<RFC3339Nano> <stdout|stderr> <P|F> <text>``.

Pure functions over bytes, no I/O. A container line longer than the runtime's
buffer arrives as several ``P`` (partial) lines ended by one ``F`` (full) line;
``PartialJoiner`` reassembles them per stream, never mixing stdout and stderr.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field


@dataclass(slots=True)
class CriLine:
    time_ns: int
    stream: str
    partial: bool
    text: bytes


class _SecondCache:
    """Lines written within the same second share their 'YYYY-MM-DDTHH:MM:SS'
    prefix; converting it once per second keeps timestamp parsing off the profile."""

    __slots__ = ("prefix", "seconds")

    def __init__(self) -> None:
        self.prefix = b""
        self.seconds = 0

    def epoch(self, prefix: bytes) -> int:
        if prefix != self.prefix:
            y, mo, d = int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10])
            h, mi, s = int(prefix[11:13]), int(prefix[14:16]), int(prefix[17:19])
            if prefix[4:5] != b"-" or prefix[10:11] not in (b"T", b"t", b" "):
                raise ValueError("not RFC 3339")
            self.seconds = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
            self.prefix = prefix
        return self.seconds


_cache = _SecondCache()


def parse_rfc3339_ns(ts: bytes) -> int:
    """RFC 3339 timestamp with optional fraction (any digits) and Z or ±hh:mm."""
    seconds = _cache.epoch(ts[:19])
    rest = ts[19:]
    frac_ns = 0
    if rest[:1] == b".":
        i = 1
        while i < len(rest) and 48 <= rest[i] <= 57:
            i += 1
        digits = rest[1:i][:9]
        if not digits:
            raise ValueError("empty fraction")
        frac_ns = int(digits) * 10 ** (9 - len(digits))
        rest = rest[i:]
    if rest in (b"Z", b"z"):
        offset = 0
    elif len(rest) == 6 and rest[0:1] in (b"+", b"-") and rest[3:4] == b":":
        offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0:1] == b"+" else -1)
    else:
        raise ValueError("bad zone")
    return (seconds - offset) * 1_000_000_000 + frac_ns


def parse_line(line: bytes) -> CriLine | None:
    """Parse one CRI line (without its newline); None if the prefix is malformed."""
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    ts, stream, tag = parts[0], parts[1], parts[2]
    if stream not in (b"stdout", b"stderr") or tag not in (b"P", b"F"):
        return None
    try:
        time_ns = parse_rfc3339_ns(ts)
    except (ValueError, IndexError):
        return None
    return CriLine(time_ns, stream.decode(), tag == b"P", parts[3] if len(parts) == 4 else b"")


@dataclass(slots=True)
class Joined:
    """One complete container line: its first piece's offset and time, its text."""

    offset: int
    time_ns: int
    stream: str
    text: bytes
    truncated: bool = False


@dataclass(slots=True)
class _Pending:
    offset: int
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

    def feed(self, offset: int, line: CriLine) -> Joined | None:
        p = self._pending.get(line.stream)
        if p is None:
            if not line.partial and len(line.text) <= self.max_bytes:
                return Joined(offset, line.time_ns, line.stream, line.text)
            p = _Pending(offset, line.time_ns)
        self._append(p, line.text)
        if line.partial:
            self._pending[line.stream] = p
            return None
        self._pending.pop(line.stream, None)
        return Joined(p.offset, p.time_ns, line.stream, b"".join(p.pieces), p.truncated)

    def drain(self) -> list[Joined]:
        """Give up on unfinished records (the file ended for good): emit what we have."""
        out = [Joined(p.offset, p.time_ns, s, b"".join(p.pieces), p.truncated)
               for s, p in sorted(self._pending.items(), key=lambda kv: kv[1].offset)]
        self._pending.clear()
        return out

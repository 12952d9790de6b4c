"""Joining multi-line events (stack traces, panics) into one record.

A rule is a "continuation" pattern: a line matching it belongs to the event
before it; any other line starts a new event. An event is emitted when the
next one starts or when no line has come for ``flush_ms``. Built-in presets
cover Java and Python stack traces and Go panics; custom patterns are regexes.
Pure, no I/O; one joiner per stream.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

PRESETS: dict[str, str] = {
    # "\tat com.x.Y(Y.java:1)", "\t... 12 more", "Caused by: …", "\tSuppressed: …"
    "java": r"^\s+at\s|^\s+\.\.\.\s\d+\s+more|^Caused by:|^\s+Suppressed:",
    # "Traceback (most recent call last):", indented frames, the final "XxxError: …",
    # and the chaining sentences between tracebacks.
    "python": (r"^Traceback \(most recent call last\):|^\s+\S|^[\w.]*(Error|Exception|Exit|Interrupt|Warning)\b"
               r"|^During handling of the above exception|^The above exception was the direct cause|^$"),
    # "panic: …" is followed by "", "goroutine N [running]:", "main.f(…)" and "\t/src/x.go:12 +0x1d" lines.
    "go": r"^$|^goroutine \d+ \[|^\s+\S|^[\w./*()-]+\(.*\)$|^exit status \d+|^\[signal |^created by ",
}


@dataclass(slots=True)
class Event:
    offset: int
    end: int          # just past the last line joined in
    time_ns: int
    stream: str | None
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    truncated: bool = False
    last_seen: float = 0.0


def compile_rules(presets: tuple[str, ...], custom: tuple[str, ...]) -> re.Pattern[bytes] | None:
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ValueError(f"unknown multiline preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}")
    patterns = [PRESETS[p] for p in presets] + list(custom)
    return re.compile("|".join(f"(?:{p})" for p in patterns).encode()) if patterns else None


class MultilineJoiner:
    def __init__(self, continuation: re.Pattern[bytes], max_bytes: int, flush_ms: int) -> None:
        self.continuation = continuation
        self.max_bytes = max_bytes
        self.flush_s = flush_ms / 1000
        self._open: dict[str | None, Event] = {}

    def oldest_offset(self) -> int | None:
        return min((e.offset for e in self._open.values()), default=None)

    def feed(self, offset: int, end: int, time_ns: int, stream: str | None, text: bytes,
             truncated: bool = False) -> Event | None:
        """Add one line; returns the event it completed, if any."""
        now = time.monotonic()
        ev = self._open.get(stream)
        if ev is not None and self.continuation.match(text):
            room = self.max_bytes - ev.size
            piece = b"\n" + text
            if len(piece) > room:
                piece, ev.truncated = piece[:max(room, 0)], True
            ev.parts.append(piece)
            ev.size += len(piece)
            ev.truncated |= truncated
            ev.last_seen = now
            ev.end = end
            return None
        self._open[stream] = Event(offset, end, time_ns, stream, [text], len(text), truncated, now)
        return ev

    def expired(self, now: float | None = None) -> list[Event]:
        now = time.monotonic() if now is None else now
        done = [s for s, e in self._open.items() if now - e.last_seen >= self.flush_s]
        return [self._open.pop(s) for s in done]

    def drain(self) -> list[Event]:
        out = sorted(self._open.values(), key=lambda e: e.offset)
        self._open.clear()
        return out

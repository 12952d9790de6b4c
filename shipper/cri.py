"""Kubernetes CRI log lines: ``<RFC3339Nano> <stdout|stderr> <P|F> <text>``.

Pure functions over bytes, no I/O. A container line longer than the runtime's
buffer arrives as several ``P`` (partial) lines ended by one ``F`` (full) line;
shipper.partial reassembles them.
"""

from __future__ import annotations

import calendar

from shipper.partial import RuntimeLine


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
    if len(ts) == 30 and ts[19] == 46 and ts[29] == 90:  # the form kubelet and Docker write: .nnnnnnnnnZ
        return seconds * 1_000_000_000 + int(ts[20:29])
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


def parse_line(line: bytes) -> RuntimeLine | None:
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
    return RuntimeLine(time_ns, stream.decode(), tag == b"P", parts[3] if len(parts) == 4 else b"")

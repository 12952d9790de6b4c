"""Which records a person means: namespace, pod and container globs and a time window.

Shared by queries, legal holds, retention rules and erasure requests: the same
selector gives the SQL that matches rows and the test that rules a file out
from its catalog entry alone. Times are relative (``15m``, ``1h30m``, ``2d12h``,
``now``) or RFC 3339 (``2026-11-24T10:00:00Z``, ``2026-11-24``).
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction

from runtime.errors import ConfigError
from schemas.record import SECOND_NS, SEVERITY_RANGES

_NS = SECOND_NS
_UNITS: dict[str, Fraction | int] = {"ms": Fraction(1, 1000), "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400,
                                    "y": 365 * 86400}
# "ms" before "m" so that 5ms is five milliseconds, not five minutes and a stray "s"
_DURATION_PART = re.compile(r"(\d+)(?:\.(\d+))?(ms|[smhdwy])")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|[smhdwy]))+")
_DURATION_ISH = re.compile(r"[\d.]+[a-zA-Z\u00b5][\w.\u00b5]*")  # looks meant as a duration: say how to write one
# The fraction of a second, to the nanosecond (datetime keeps microseconds): it follows the time of day, whose
# hour comes right after the date's separator ("T", "t" or a space in RFC 3339; datetime takes any character),
# not after a colon or digit, while an offset's hour (which may have a fraction too) follows its sign.
_FRACTION = re.compile(r"[^\d:+-]\d\d(?::?\d\d){0,2}[.,](\d+)")
# The latest instant a timestamp_ns holds: DuckDB reads int64 max itself as 'infinity'.
MAX_TIME_NS = 2**63 - 2
_BEYOND_EPOCH_NS = 2**64  # a duration longer than the lake can span


class SelectorError(ConfigError):
    """A time expression, glob or level a person typed is wrong."""
    http_status = 400


# OpenTelemetry severity number ranges
LEVELS = SEVERITY_RANGES
_ALIASES = {"warning": "warn", "err": "error", "critical": "fatal", "crit": "fatal", "panic": "fatal"}


def parse_levels(text: str) -> tuple[tuple[int, int], ...]:
    """``error``, ``warn,error`` or ``warn+`` (warn and above) → severity number ranges."""
    ranges = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        name = _ALIASES.get(part.rstrip("+"), part.rstrip("+"))
        if name not in LEVELS:
            raise SelectorError(f"unknown level {part!r}: use one of {', '.join(LEVELS)} (add + for that level "
                                "and above, e.g. warn+)")
        low, high = LEVELS[name]
        ranges.append((low, 24 if part.endswith("+") else high))
    return tuple(ranges)


# A row's level by name, from its severity number: what `stats --by level` and Loki's level label show.
LEVEL_NAME = ("CASE WHEN severity_number = 0 THEN 'unknown' "
              + " ".join(f"WHEN severity_number <= {last} THEN '{name}'" for name, (_, last) in LEVELS.items())
              + " END")


def levels_sql(ranges: tuple[tuple[int, int], ...]) -> str:
    return "(" + " OR ".join(f"severity_number BETWEEN {a} AND {b}" for a, b in ranges) + ")" if ranges else "TRUE"


def parse_duration_ns(text: str) -> int | None:
    """ns in a duration like ``90s``, ``1h30m``, ``2d12h`` or ``1.5h`` (numbers each with a unit, as logcli
    and Prometheus write them), or None when ``text`` is not one. Exact (Fraction, not float), so a huge
    count neither overflows nor loses digits: callers clamp."""
    if not _DURATION.fullmatch(text):
        return None
    total = Fraction(0)
    for whole, frac, unit in _DURATION_PART.findall(text):
        if len(whole.lstrip("0")) > 24:  # past any date (and Python's int-from-text digit limit): all time
            return _BEYOND_EPOCH_NS
        # digits past the 18th are below a nanosecond even for years
        total += Fraction(whole + "." + (frac[:18] or "0")) * _UNITS[unit] * _NS
    return int(total)


def parse_time(text: str, now_ns: int | None = None) -> int:
    """ns since the epoch for a duration ago (``15m``, ``1h30m``), ``now`` or an RFC 3339 time.

    Clamped to what the lake can hold: nothing is stored before 1970 (aggregator.validate refuses it), so
    an earlier time, or a duration reaching back before 1970, means "from the beginning" (0). A time after
    ``MAX_TIME_NS`` (2262, the end of 64-bit nanoseconds, which DuckDB and the catalog's SQLite use) cannot
    be represented at all and is an error, not silently moved."""
    now = time.time_ns() if now_ns is None else now_ns
    t = text.strip()
    if t == "now":
        return now
    ago = parse_duration_ns(t)
    if ago is not None:
        return min(max(now - ago, 0), MAX_TIME_NS)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        if _DURATION_ISH.fullmatch(t):
            raise SelectorError(f"bad time expression {text!r}: a duration is numbers each with a unit "
                                "(ms, s, m, h, d, w or y), like 90s, 1h30m or 2d12h") from None
        raise SelectorError(f"bad time expression {text!r}: use a duration ago like 15m, 1h30m or 7d, "
                            "or an RFC 3339 time like 2026-11-24T10:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    frac = _FRACTION.search(t)
    nanos = int(frac.group(1)[:9].ljust(9, "0")) if frac else 0
    ns = int(dt.replace(microsecond=0).timestamp()) * _NS + nanos
    if ns > MAX_TIME_NS:
        raise SelectorError(f"time {text!r} is after {format_time(MAX_TIME_NS)}, the latest time the lake can "
                            "represent (64-bit nanoseconds); give an earlier time")
    return max(ns, 0)


def format_time(ns: int | None) -> str:
    if ns is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // _NS)) + f".{ns % _NS:09d}Z"


def sql_glob(value: str, pattern: str) -> bool:
    """``value GLOB pattern`` as DuckDB has it, so the catalog's test of a file agrees with the SQL."""
    regex = _glob_regex(pattern)
    return regex is not None and regex.fullmatch(value.encode()) is not None


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[bytes] | None:
    """DuckDB's GLOB (its function Glob) as a regular expression; None for a pattern that matches nothing.
    It compares UTF-8 bytes, not characters: ``?`` and a bracket take one byte each, and a range's ends are
    bytes. A backslash makes the next byte literal, outside brackets only; a pattern ending in a lone
    backslash, or with a bracket that is not closed, matches nothing."""
    p = pattern.encode()
    out: list[bytes] = []
    i, n = 0, len(p)
    while i < n:
        c = p[i:i + 1]
        if c == b"*":
            out.append(b".*")
        elif c == b"?":
            out.append(b".")
        elif c == b"\\":
            i += 1
            if i == n:
                return None
            out.append(re.escape(p[i:i + 1]))
        elif c == b"[":
            i += 1
            invert = p[i:i + 1] == b"!"
            i += invert
            first, ranges, closed = i, [], False
            while i < n:
                # a "]" right after the "[" (or "[!") is a member, not the end
                if p[i:i + 1] == b"]" and i > first:
                    closed = True
                    break
                if i + 1 == n:
                    break
                if p[i + 1:i + 2] == b"-":
                    if i + 2 == n:
                        break
                    ranges.append((p[i], p[i + 2]))
                    i += 3
                else:
                    ranges.append((p[i], p[i]))
                    i += 1
            members = _bracket(tuple(ranges), invert)
            if not closed or not members:
                return None
            out.append(b"[" + b"".join(b"\\x%02x" % b for b in members) + b"]")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile(b"".join(out), re.DOTALL)


def _bracket(ranges: tuple[tuple[int, int], ...], invert: bool) -> list[int]:
    """The bytes a bracket matches. DuckDB compares ``char``, signed on x86-64 and unsigned on arm64, so a
    range with an end above 0x7f differs between builds: the bytes either would match, lest a file be
    ruled out that the SQL matches."""
    out: set[int] = set()
    for signed in (False, True):
        def key(b: int) -> int:
            return b - 256 if signed and b > 0x7f else b
        hit = {b for b in range(256) if any(key(lo) <= key(b) <= key(hi) for lo, hi in ranges)}
        out |= set(range(256)) - hit if invert else hit
    return sorted(out)


@dataclass(frozen=True)
class Selector:
    namespace: str | None = None   # globs; None matches anything
    pod: str | None = None
    container: str | None = None
    since_ns: int | None = None    # [since, until)
    until_ns: int | None = None

    def __post_init__(self) -> None:
        if self.since_ns is not None and self.until_ns is not None and self.since_ns > self.until_ns:
            raise SelectorError("--since is later than --until; swap them")

    def _clauses(self) -> list[tuple[str, object]]:
        """(SQL condition with one ``?``, its parameter) each."""
        out: list[tuple[str, object]] = [(f"coalesce({column}, '') GLOB ?", getattr(self, column))
                                         for column in ("namespace", "pod", "container")
                                         if getattr(self, column) is not None]
        if self.since_ns is not None:
            out.append(("time >= make_timestamp_ns(?)", self.since_ns))
        if self.until_ns is not None:
            out.append(("time < make_timestamp_ns(?)", self.until_ns))
        return out

    def where(self) -> tuple[list[str], list[object]]:
        """SQL conditions (to AND together) and their parameters."""
        clauses = self._clauses()
        return [c for c, _ in clauses], [p for _, p in clauses]

    def sql(self) -> str:
        """The selector as one SQL condition with its parameters inlined (for CASE expressions). Each
        clause is filled on its own, so a ``?`` inside a glob is never taken for a placeholder."""
        def literal(p: object) -> str:
            return "'" + p.replace("'", "''") + "'" if isinstance(p, str) else str(int(p))  # type: ignore[call-overload]
        return " AND ".join(c.replace("?", literal(p)) for c, p in self._clauses()) or "TRUE"

    def may_match(self, namespaces: tuple[str, ...], containers: tuple[str, ...], min_time: int,
                  max_time: int) -> bool:
        """Can a file with these catalog facts hold a matching record?"""
        if self.since_ns is not None and max_time < self.since_ns:
            return False
        if self.until_ns is not None and min_time >= self.until_ns:
            return False
        if self.namespace is None and self.pod is None and self.container is None:
            return True
        return any(self._container_matches(c) for c in containers)

    def _container_matches(self, triple: str) -> bool:
        ns, pod, container = (triple.split("/", 2) + ["", ""])[:3]
        return all(pattern is None or sql_glob(value, pattern)
                   for pattern, value in ((self.namespace, ns), (self.pod, pod), (self.container, container)))

    def describe(self) -> str:
        parts = [f"{k}={getattr(self, k)}" for k in ("namespace", "pod", "container") if getattr(self, k)]
        if self.since_ns is not None or self.until_ns is not None:
            parts.append(f"time=[{format_time(self.since_ns)}, {format_time(self.until_ns)})")
        return " ".join(parts) or "everything"

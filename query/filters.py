"""What a person asks for — containers, levels, a time window, a needle — as SQL and as catalog bounds.

Times are relative (``15m``, ``2h``, ``7d``, ``90s``, ``now``) or RFC 3339
(``2026-11-24T10:00:00Z``, ``2026-11-24T11:00:00+01:00``, ``2026-11-24``).
Selectors are shell globs (``checkout-*``), as in ``kubectl`` and Loki label
matchers. Levels are OpenTelemetry severity ranges, so ``error`` matches
``ERROR``, ``err`` and ``E`` lines alike; ``warn+`` means warn and above.
"""

from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from query.errors import QueryError

_NS = 1_000_000_000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# OpenTelemetry severity number ranges
LEVELS = {"trace": (1, 4), "debug": (5, 8), "info": (9, 12), "warn": (13, 16), "error": (17, 20), "fatal": (21, 24)}
_ALIASES = {"warning": "warn", "err": "error", "critical": "fatal", "crit": "fatal", "panic": "fatal"}


def parse_time(text: str, now_ns: int | None = None) -> int:
    """ns since the epoch for a relative duration (that long ago) or an RFC 3339 time."""
    now = time.time_ns() if now_ns is None else now_ns
    t = text.strip()
    if t == "now":
        return now
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", t)
    if m:
        return now - int(float(m.group(1)) * _UNITS[m.group(2)] * _NS)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(f"bad time expression {text!r}: use a duration ago like 15m, 2h or 7d, "
                         "or an RFC 3339 time like 2026-11-24T10:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return _ns_of(dt, t)


def _ns_of(dt: datetime, text: str) -> int:
    """Exact ns (datetime keeps microseconds; the nanosecond digits are taken from the text)."""
    frac = re.search(r"\.(\d+)", text.split("T", 1)[-1]) if "T" in text else None
    nanos = int(frac.group(1)[:9].ljust(9, "0")) if frac else 0
    return int(dt.replace(microsecond=0).timestamp()) * _NS + nanos


def parse_levels(text: str) -> list[tuple[int, int]]:
    """``error``, ``warn,error`` or ``warn+`` → severity number ranges."""
    ranges = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        at_least = part.endswith("+")
        name = _ALIASES.get(part.rstrip("+"), part.rstrip("+"))
        if name not in LEVELS:
            raise QueryError(f"unknown level {part!r}: use one of {', '.join(LEVELS)} (add + for that level "
                             "and above, e.g. warn+)")
        low, high = LEVELS[name]
        ranges.append((low, 24 if at_least else high))
    return ranges


@dataclass(frozen=True)
class Filters:
    namespace: str | None = None      # globs
    pod: str | None = None
    container: str | None = None
    levels: tuple[tuple[int, int], ...] = ()
    since_ns: int | None = None
    until_ns: int | None = None
    grep: str | None = None
    regex: bool = False
    trace_id: str | None = None

    def __post_init__(self) -> None:
        if self.regex and self.grep is not None:
            try:
                re.compile(self.grep)
            except re.error as e:
                raise QueryError(f"bad regular expression {self.grep!r} ({e}); drop --regex to search the text as is")
        if self.since_ns is not None and self.until_ns is not None and self.since_ns > self.until_ns:
            raise QueryError("--since is later than --until; swap them")

    def where(self) -> tuple[str, list[object]]:
        """A WHERE clause (``TRUE`` when empty) and its parameters."""
        clauses: list[str] = []
        params: list[object] = []
        for column in ("namespace", "pod", "container"):
            pattern = getattr(self, column)
            if pattern is not None:
                clauses.append(f"{column} GLOB ?")
                params.append(pattern)
        if self.levels:
            clauses.append("(" + " OR ".join("severity_number BETWEEN ? AND ?" for _ in self.levels) + ")")
            params += [n for r in self.levels for n in r]
        if self.since_ns is not None:
            clauses.append("time >= make_timestamp_ns(?)")
            params.append(self.since_ns)
        if self.until_ns is not None:
            clauses.append("time < make_timestamp_ns(?)")
            params.append(self.until_ns)
        if self.grep is not None:
            clauses.append("regexp_matches(body, ?)" if self.regex else "contains(body, ?)")
            params.append(self.grep)
        if self.trace_id is not None:
            clauses.append("trace_id = ?")
            params.append(self.trace_id)
        return (" AND ".join(clauses) or "TRUE"), params

    def may_match(self, namespaces: tuple[str, ...], containers: tuple[str, ...], min_time: int,
                  max_time: int) -> bool:
        """Can a file with these catalog facts hold a matching record?"""
        if self.since_ns is not None and max_time < self.since_ns:
            return False
        if self.until_ns is not None and min_time >= self.until_ns:
            return False
        if self.namespace is not None and not any(fnmatch.fnmatchcase(n, self.namespace) for n in namespaces):
            return False
        if self.pod is not None or self.container is not None:
            return any(self._container_matches(c) for c in containers)
        return True

    def _container_matches(self, triple: str) -> bool:
        ns, pod, container = (triple.split("/", 2) + ["", ""])[:3]
        return all(pattern is None or fnmatch.fnmatchcase(value, pattern)
                   for pattern, value in ((self.namespace, ns), (self.pod, pod), (self.container, container)))

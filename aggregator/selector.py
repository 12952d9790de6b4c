"""Which records a person means: namespace, pod and container globs and a time window.

Shared by queries, legal holds, retention rules and erasure requests: the same
selector gives the SQL that matches rows and the test that rules a file out
from its catalog entry alone. Times are relative (``15m``, ``2h``, ``7d``,
``now``) or RFC 3339 (``2026-11-24T10:00:00Z``, ``2026-11-24``).
"""

from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from schemas.errors import ConfigError

_NS = 1_000_000_000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class SelectorError(ConfigError):
    """A time expression, glob or level a person typed is wrong."""


# OpenTelemetry severity number ranges
LEVELS = {"trace": (1, 4), "debug": (5, 8), "info": (9, 12), "warn": (13, 16), "error": (17, 20), "fatal": (21, 24)}
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


def levels_sql(ranges: tuple[tuple[int, int], ...]) -> str:
    return "(" + " OR ".join(f"severity_number BETWEEN {a} AND {b}" for a, b in ranges) + ")" if ranges else "TRUE"


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
        raise SelectorError(f"bad time expression {text!r}: use a duration ago like 15m, 2h or 7d, "
                                  "or an RFC 3339 time like 2026-11-24T10:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    frac = re.search(r"\.(\d+)", t.split("T", 1)[1]) if "T" in t else None
    nanos = int(frac.group(1)[:9].ljust(9, "0")) if frac else 0
    return int(dt.replace(microsecond=0).timestamp()) * _NS + nanos


def format_time(ns: int | None) -> str:
    if ns is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // _NS)) + f".{ns % _NS:09d}Z"


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
        return all(pattern is None or fnmatch.fnmatchcase(value, pattern)
                   for pattern, value in ((self.namespace, ns), (self.pod, pod), (self.container, container)))

    def describe(self) -> str:
        parts = [f"{k}={getattr(self, k)}" for k in ("namespace", "pod", "container") if getattr(self, k)]
        if self.since_ns is not None or self.until_ns is not None:
            parts.append(f"time=[{format_time(self.since_ns)}, {format_time(self.until_ns)})")
        return " ".join(parts) or "everything"

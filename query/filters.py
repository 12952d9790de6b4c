"""What a person asks for — containers, a time window, levels, a needle, a trace — as SQL and as
catalog bounds (see aggregator.selector for selectors and time expressions).

Levels are OpenTelemetry severity ranges, so ``error`` matches ``ERROR``,
``err`` and ``E`` lines alike; ``warn+`` means warn and above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aggregator.selector import Selector, levels_sql
from query.errors import QueryError


@dataclass(frozen=True)
class Filters:
    selector: Selector = field(default_factory=Selector)
    levels: tuple[tuple[int, int], ...] = ()
    grep: str | None = None
    regex: bool = False
    trace_id: str | None = None

    def __post_init__(self) -> None:
        if self.regex and self.grep is not None:
            try:
                re.compile(self.grep)
            except re.error as e:
                raise QueryError(f"bad regular expression {self.grep!r} ({e}); drop --regex to search the text as is")

    @property
    def since_ns(self) -> int | None:
        return self.selector.since_ns

    @property
    def until_ns(self) -> int | None:
        return self.selector.until_ns

    def where(self) -> tuple[str, list[object]]:
        """A WHERE clause (``TRUE`` when empty) and its parameters."""
        clauses, params = self.selector.where()
        if self.levels:
            clauses.append(levels_sql(self.levels))
        if self.grep is not None:
            clauses.append("regexp_matches(body, ?)" if self.regex else "contains(body, ?)")
            params.append(self.grep)
        if self.trace_id is not None:
            clauses.append("trace_id = ?")
            params.append(self.trace_id)
        return (" AND ".join(clauses) or "TRUE"), params

    def may_match(self, namespaces: tuple[str, ...], containers: tuple[str, ...], min_time: int,
                  max_time: int) -> bool:
        return self.selector.may_match(namespaces, containers, min_time, max_time)

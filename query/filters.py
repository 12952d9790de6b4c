"""What a person asks for — containers, a time window, levels, a needle, a trace — as SQL and as
catalog bounds (see lake.selector for selectors and time expressions).

Levels are OpenTelemetry severity ranges, so ``error`` matches ``ERROR``,
``err`` and ``E`` lines alike; ``warn+`` means warn and above. A ``--grep
--regex`` pattern is checked by the engine that runs it (DuckDB's RE2), not by
Python's ``re``, whose syntax differs (look-around, backreferences). Trace ids
are stored as 32 lowercase hex digits (aggregator.validate), so what a person
types is brought to that form.

``previous`` asks what ``kubectl logs --previous`` shows: the lines of the run
of a container before its latest one, that is of the restart count one below
the highest the lake holds for that container of that pod (kubelet's
``<restart>.log``, the view's ``"k8s.container.restart_count"``). A container
whose files give no restart count (Docker without Kubernetes labels, a plain
file) has no previous run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


from lake.selector import Selector, levels_sql
from query.connect import regex_error
from runtime.errors import QueryError

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
RESTART = '"k8s.container.restart_count"'
# The run before the latest of each container (of each pod: a new pod of the same name counts from 0 again).
PREVIOUS_SQL = (f"{RESTART} = (SELECT max(run.{RESTART}) - 1 FROM logs AS run "
                "WHERE run.pod_uid IS NOT DISTINCT FROM logs.pod_uid AND run.namespace IS NOT DISTINCT FROM "
                "logs.namespace AND run.pod IS NOT DISTINCT FROM logs.pod AND run.container IS NOT DISTINCT FROM "
                "logs.container)")
_LOOK_AROUND = re.compile(r"\(\?<?[=!]")
_BACKREFERENCE = re.compile(r"\\[1-9]")


def trace_id(text: str) -> str:
    """A trace id as stored: 32 lowercase hex digits. Upper case and dashes (a UUID-style spelling) are
    fine; anything else is one sentence."""
    tid = text.strip().replace("-", "").lower()
    if not _TRACE_ID.fullmatch(tid):
        raise QueryError(f"{text!r} is not a trace id: give its 32 hex digits, like "
                         "4bf92f3577b34da6a3ce929d0e0e4736 (upper case and dashes are fine)")
    return tid


def check_regex(pattern: str) -> None:
    """Refuse a pattern DuckDB's RE2 would refuse, with one sentence, before anything is planned or read."""
    why = regex_error(pattern)
    if why is not None:
        hint = ("RE2 has no look-around" if _LOOK_AROUND.search(pattern)
                else "RE2 has no backreferences" if _BACKREFERENCE.search(pattern)
                else "drop --regex to search the text as is")
        raise QueryError(f"--grep regex {pattern!r} is not valid RE2: {why}; {hint}")


@dataclass(frozen=True)
class Filters:
    selector: Selector = field(default_factory=Selector)
    levels: tuple[tuple[int, int], ...] = ()
    grep: str | None = None
    regex: bool = False
    trace_id: str | None = None
    previous: bool = False

    def __post_init__(self) -> None:
        if self.regex and self.grep is not None:
            check_regex(self.grep)
        if self.trace_id is not None:
            object.__setattr__(self, "trace_id", trace_id(self.trace_id))  # frozen: set once, here

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
        if self.previous:
            clauses.append(PREVIOUS_SQL)
        return (" AND ".join(clauses) or "TRUE"), params

    @property
    def per_row(self) -> bool:
        """Whether a row matches by itself: ``previous`` looks at every run of the row's container."""
        return not self.previous

    def may_match(self, namespaces: tuple[str, ...], containers: tuple[str, ...], min_time: int,
                  max_time: int) -> bool:
        return self.selector.may_match(namespaces, containers, min_time, max_time)

"""The LogQL subset Grafana's Loki data source sends, parsed into a tree, and that tree as SQL over ``logs``.

    {namespace="shop", container=~"app|web", level!="debug"} |= "timeout" != "retry" | json | status >= 500
    sum by (container) (count_over_time({namespace="shop"} |~ "5\\d\\d" [5m]))
    rate(...[1m])   bytes_over_time(...[1h])   count|sum|avg|min|max [by|without (…)]
    vector(1) + vector(1)                      (Grafana's "Save & test")

Stream labels are the stored ones: ``namespace``, ``pod``, ``container``, ``stream``, ``node``, and
``level`` (also ``detected_level``), the severity by name; ``trace_id`` and ``span_id`` can be filtered on
(``| trace_id="…"``), as Loki's structured metadata. A label the lake does not have is empty, as in
Loki. ``| json`` and ``| logfmt`` make a body's fields available to the label filters after them (they
do not become stream labels). Anything outside the subset is a ``QueryError`` naming the part, which the
API returns as 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from lake.selector import LEVEL_NAME
from runtime.errors import QueryError
from schemas.record import SECOND_NS

LABELS: dict[str, str] = {
    "namespace": "coalesce(namespace, '')", "pod": "coalesce(pod, '')", "container": "coalesce(container, '')",
    "stream": "coalesce(stream, '')", "node": "coalesce(node, '')", "level": LEVEL_NAME, "detected_level": LEVEL_NAME,
    # structured metadata in Loki's terms: filterable (| trace_id="…"), not stream labels
    "trace_id": "coalesce(trace_id, '')", "span_id": "coalesce(span_id, '')",
}
STREAM_LABELS = ("namespace", "pod", "container", "stream", "node", "level")
RANGE_FUNCTIONS = ("count_over_time", "rate", "bytes_over_time", "bytes_rate")
AGGREGATIONS = ("sum", "count", "avg", "min", "max")
_DURATION_UNITS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": SECOND_NS, "m": 60 * SECOND_NS,
                   "h": 3600 * SECOND_NS, "d": 86400 * SECOND_NS, "w": 7 * 86400 * SECOND_NS,
                   "y": 365 * 86400 * SECOND_NS}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w|y))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w|y)")
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<duration>\[[^\]]*\])
  | (?P<op>\|=|\|~|!=|!~|=~|==|>=|<=|=|>|<|\||\{|\}|\(|\)|,|\+|-|\*|/)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
""", re.VERBOSE)


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str            # = != =~ !~
    value: str


@dataclass(frozen=True)
class LineFilter:
    op: str            # |= != |~ !~
    value: str


@dataclass(frozen=True)
class LabelFilter:
    label: str
    op: str            # = != =~ !~ == > >= < <=
    value: str | float


@dataclass(frozen=True)
class LogQuery:
    matchers: tuple[Matcher, ...]
    line_filters: tuple[LineFilter, ...] = ()
    parser: str | None = None            # "json" or "logfmt"
    label_filters: tuple[LabelFilter, ...] = ()


@dataclass(frozen=True)
class RangeAggregation:
    function: str
    query: LogQuery
    range_ns: int


@dataclass(frozen=True)
class VectorAggregation:
    op: str
    inner: RangeAggregation
    by: tuple[str, ...] | None = None     # None: every label of the inner series ... or none, with ``without``
    without: bool = False


@dataclass(frozen=True)
class Scalar:
    value: float


Expr = Union[LogQuery, RangeAggregation, VectorAggregation, Scalar]


def parse_duration(text: str) -> int:
    """A Prometheus/Loki duration (``5m``, ``1h30m``, ``250ms``) in nanoseconds."""
    if not _DURATION.fullmatch(text):
        raise QueryError(f"{text!r} is not a duration: write it like 30s, 5m, 1h30m")
    total = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    if not total < 2**62:
        raise QueryError(f"the duration {text!r} is longer than the lake can span")
    return int(total)


def _unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    out, i, body = [], 0, token[1:-1]
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'"}
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append(escapes.get(nxt, "\\" + nxt))  # an unknown escape stays as typed (\d in a regex)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise QueryError(f"parse error at position {pos + 1}: unexpected {text[pos:pos + 10]!r}")
            if m.lastgroup != "space":
                self.tokens.append((m.lastgroup or "", m.group(), pos))
            pos = m.end()
        self.i = 0

    def peek(self, ahead: int = 0) -> tuple[str, str, int]:
        j = self.i + ahead
        return self.tokens[j] if j < len(self.tokens) else ("end", "", len(self.text))

    def take(self, kind: str | None = None, value: str | None = None, want: str | None = None) -> str:
        k, v, pos = self.peek()
        if (kind is not None and k != kind) or (value is not None and v != value):
            want = want or (f'"{value}"' if value else kind)
            got = "the end of the query" if k == "end" else repr(v)
            raise QueryError(f"parse error at position {pos + 1}: expected {want}, found {got}")
        self.i += 1
        return v

    def at(self, value: str) -> bool:
        return self.peek()[1] == value and self.peek()[0] in ("op", "ident")

    # expr := term (('+' | '-') term)*  — between scalars only
    def expr(self) -> Expr:
        left = self.term()
        while self.at("+") or self.at("-"):
            op = self.take()
            left = _arith(op, left, self.term())
        return left

    def term(self) -> Expr:
        left = self.unary()
        while self.at("*") or self.at("/"):
            op = self.take()
            left = _arith(op, left, self.unary())
        return left

    def unary(self) -> Expr:
        kind, value, pos = self.peek()
        if kind == "number":
            self.take()
            return Scalar(float(value))
        if kind == "op" and value == "(":
            self.take()
            inner = self.expr()
            self.take("op", ")")
            return inner
        if kind == "op" and value == "{":
            return self.log_query()
        if kind == "ident":
            if value == "vector":
                self.take()
                self.take("op", "(")
                n = self.take("number")
                self.take("op", ")")
                return Scalar(float(n))
            if value in RANGE_FUNCTIONS:
                return self.range_aggregation()
            if value in AGGREGATIONS:
                return self.vector_aggregation()
            raise QueryError(f"{value!r} is not supported here: this service answers stream selectors, line "
                             f"filters, | json, | logfmt, label filters, {', '.join(RANGE_FUNCTIONS)} and "
                             f"{', '.join(AGGREGATIONS)} [by|without (…)]")
        raise QueryError(f"parse error at position {pos + 1}: unexpected "
                         f"{'the end of the query' if kind == 'end' else repr(value)}")

    def labels(self) -> tuple[str, ...]:
        self.take("op", "(")
        names = []
        while not self.at(")"):
            names.append(self.take("ident"))
            if not self.at(")"):
                self.take("op", ",")
        self.take("op", ")")
        return tuple(names)

    def vector_aggregation(self) -> VectorAggregation:
        op = self.take("ident")
        by, without = None, False
        if self.at("by") or self.at("without"):
            without = self.take() == "without"
            by = self.labels()
        self.take("op", "(")
        inner = self.expr()
        self.take("op", ")")
        if self.at("by") or self.at("without"):
            if by is not None:
                raise QueryError("give by (…) or without (…) once, before or after the aggregation")
            without = self.take() == "without"
            by = self.labels()
        if not isinstance(inner, RangeAggregation):
            raise QueryError(f"{op}(…) is supported over a range aggregation ({', '.join(RANGE_FUNCTIONS)}) only")
        return VectorAggregation(op, inner, by, without)

    def range_aggregation(self) -> RangeAggregation:
        function = self.take("ident")
        self.take("op", "(")
        query = self.log_query()
        _, window, pos = self.peek()
        self.take("duration")
        self.take("op", ")")
        if self.at("by") or self.at("without"):
            raise QueryError(f"{function}(…) by (…) is not supported; aggregate with sum by (…) ({function}(…))")
        range_ns = parse_duration(window[1:-1].strip())
        if range_ns <= 0:
            raise QueryError(f"the range [{window[1:-1]}] at position {pos + 1} must be longer than 0")
        return RangeAggregation(function, query, range_ns)

    def log_query(self) -> LogQuery:
        self.take("op", "{")
        matchers = []
        while not self.at("}"):
            label = self.take("ident")
            op = self.take("op")
            if op not in ("=", "!=", "=~", "!~"):
                raise QueryError(f"stream selector {label}{op}: use =, !=, =~ or !~")
            matchers.append(Matcher(label, op, _unquote(self.take("string"))))
            if not self.at("}"):
                self.take("op", ",", "\",\" or \"}\"")
        self.take("op", "}")
        if not any(_excludes_empty(m) for m in matchers):
            raise QueryError("queries require at least one regexp or equality matcher that does not have an "
                             "empty-compatible value. For instance, app=~\".*\" does not meet this requirement, "
                             "but app=~\".+\" will")
        line_filters: list[LineFilter] = []
        parser: str | None = None
        label_filters: list[LabelFilter] = []
        while True:
            kind, value, pos = self.peek()
            if kind == "op" and value in ("|=", "!=", "|~", "!~"):
                if parser is not None or label_filters:
                    raise QueryError(f"line filter {value} after a parser or label filter is not supported; "
                                     "put line filters first")
                self.take()
                line_filters.append(LineFilter(value, _unquote(self.take("string"))))
            elif kind == "op" and value == "|":
                self.take()
                stage_kind, stage, stage_pos = self.peek()
                if stage in ("json", "logfmt") and stage_kind == "ident":
                    self.take()
                    if self.peek()[0] in ("ident", "string") and self.peek()[1] not in ("by", "without"):
                        raise QueryError(f"| {stage} with parameters is not supported; use | {stage} alone")
                    if parser is not None:
                        raise QueryError("one parser stage (| json or | logfmt) per query is supported")
                    parser = stage
                elif stage_kind == "ident" and self.peek(1)[0] == "op" and self.peek(1)[1] in (
                        "=", "!=", "=~", "!~", "==", ">", ">=", "<", "<="):
                    label = self.take()
                    op = self.take()
                    vk, vv, _ = self.peek()
                    if vk == "string":
                        if op not in ("=", "!=", "=~", "!~"):
                            raise QueryError(f"label filter {label}{op}\"…\": a string compares with =, !=, =~ or "
                                             "!~; give a number to compare with > >= < <= ==")
                        self.take()
                        label_filters.append(LabelFilter(label, op, _unquote(vv)))
                    elif vk in ("number", "ident") and op not in ("=~", "!~"):
                        self.take()
                        label_filters.append(LabelFilter(label, op, _number(vv)))
                    else:
                        raise QueryError(f"label filter {label}{op} needs a quoted string or a number")
                else:
                    raise QueryError(f"| {stage or 'nothing'} at position {stage_pos + 1} is not supported: after "
                                     "| this service takes json, logfmt or a label filter (name op value)")
            else:
                break
        return LogQuery(tuple(matchers), tuple(line_filters), parser, tuple(label_filters))


def _number(text: str) -> float:
    """A label filter's number, or a duration (``| duration > 250ms``) in seconds."""
    try:
        return float(text)
    except ValueError:
        return parse_duration(text) / SECOND_NS


def _excludes_empty(m: Matcher) -> bool:
    if m.op == "=":
        return m.value != ""
    if m.op == "=~":
        try:
            return re.fullmatch(m.value, "") is None
        except re.error:
            return True   # DuckDB's RE2 will say what is wrong with it
    return False


def _arith(op: str, left: Expr, right: Expr) -> Scalar:
    if not isinstance(left, Scalar) or not isinstance(right, Scalar):
        raise QueryError("binary operations are supported between numbers and vector(…) only")
    a, b = left.value, right.value
    if op == "/" and b == 0:
        return Scalar(float("nan") if a == 0 else float("inf") if a > 0 else float("-inf"))
    return Scalar({"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[op])


def parse(text: str) -> Expr:
    if not text.strip():
        raise QueryError("the query is empty: give a stream selector such as {namespace=\"shop\"}")
    p = _Parser(text)
    try:
        tree = p.expr()
    except RecursionError:
        raise QueryError("the query nests too deeply to parse") from None
    kind, value, pos = p.peek()
    if kind != "end":
        raise QueryError(f"parse error at position {pos + 1}: unexpected {value!r} after a complete query")
    return tree


# --- SQL -----------------------------------------------------------------------------------------------

def label_sql(label: str, parser: str | None = None) -> str:
    """A label's value in SQL: a stream label, or a field of the body that ``parser`` extracts."""
    if label in LABELS:
        return LABELS[label]
    if parser == "json":
        path = "$." + ".".join('"' + part.replace('"', '') + '"' for part in label.split("_"))
        flat = "$.\"" + label.replace('"', '') + "\""
        # a body that is not JSON has no such field: never an error (which would quote the body, and might be
        # raised by a row outside the caller's grant, were DuckDB to test this before the grant)
        doc = "CASE WHEN json_valid(body) THEN body END"
        return f"coalesce(json_extract_string({doc}, '{flat}'), json_extract_string({doc}, '{path}'), '')"
    if parser == "logfmt":
        pattern = f'(?:^|\\s){re.escape(label)}=("(?:[^"\\\\]|\\\\.)*"|\\S*)'
        raw = f"regexp_extract(body, '{_sql_escape(pattern)}', 1)"
        return f"trim({raw}, '\"')"
    return "''"


def _sql_escape(s: str) -> str:
    return s.replace("'", "''")


def where(q: LogQuery) -> tuple[list[str], list[object]]:
    """SQL conditions (to AND together) and their parameters, for the query's selector and filters."""
    clauses: list[str] = []
    params: list[object] = []
    for m in q.matchers:
        column = label_sql(m.label)
        if m.op in ("=", "!="):
            clauses.append(f"{column} {'=' if m.op == '=' else '<>'} ?")
        else:
            clauses.append(f"{'' if m.op == '=~' else 'NOT '}regexp_full_match({column}, ?)")
        params.append(m.value)
    for f in q.line_filters:
        if f.op in ("|=", "!="):
            clauses.append(f"{'' if f.op == '|=' else 'NOT '}contains(body, ?)")
        else:
            clauses.append(f"{'' if f.op == '|~' else 'NOT '}regexp_matches(body, ?)")
        params.append(f.value)
    for lf in q.label_filters:
        column = label_sql(lf.label, q.parser)
        if isinstance(lf.value, float):
            op = "=" if lf.op == "==" else lf.op
            clauses.append(f"TRY_CAST({column} AS DOUBLE) {'<>' if op == '!=' else op} ?")
        elif lf.op in ("=~", "!~"):
            clauses.append(f"{'' if lf.op == '=~' else 'NOT '}regexp_full_match({column}, ?)")
        else:
            clauses.append(f"{column} {'<>' if lf.op == '!=' else '='} ?")
        params.append(lf.value)
    return clauses, params


def exact(q: LogQuery, label: str) -> str | None:
    """The value an ``=`` matcher fixes ``label`` to, if any (for planning from the catalog)."""
    for m in q.matchers:
        if m.label == label and m.op == "=":
            return m.value
    return None


def needle(q: LogQuery) -> str | None:
    """The first ``|=`` text: the needle index plans with it."""
    return next((f.value for f in q.line_filters if f.op == "|="), None)


def traced(q: LogQuery) -> str | None:
    """The trace a ``| trace_id="…"`` filter fixes, if any: the trace index plans with it."""
    return next((f.value for f in q.label_filters if f.label == "trace_id" and f.op in ("=", "==")
                 and isinstance(f.value, str)), None)

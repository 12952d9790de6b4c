"""Loki's HTTP API over the lake: the endpoints Grafana's Loki data source calls, with Loki's JSON shapes.

Each function here runs in a worker thread with that thread's ``Lake`` and the caller's grant
(``restrict``: the SQL condition of the rows the caller may read), and returns the response's JSON
document with the rows it holds. Parameters follow Loki's: times as Unix nanoseconds, seconds (with a
fraction or ten digits and fewer) or RFC 3339; ``limit`` and ``direction`` for log queries; ``step`` for
metric ones (a duration or seconds; by default the range over 250, at least 1 s).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lake.selector import Selector
from query import plan
from query.connect import IN_TIME_ORDER, NEWEST_FIRST, Lake, Restriction, Selection
from query.filters import Filters
from query.serve import logql
from query.serve.config import ServeConfig
from runtime.config import version
from runtime.errors import QueryError
from schemas.record import SECOND_NS

DEFAULT_LIMIT = 100
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
LABEL_COLUMNS = ", ".join(f"{logql.LABELS[name]} AS l_{name}" for name in logql.STREAM_LABELS)


@dataclass(frozen=True)
class Answer:
    doc: dict[str, Any]
    rows: int
    # rows returned (or, for SQL, given to it) by namespace: the audit trail's "who saw what"
    namespaces: dict[str, int] = field(default_factory=dict)


def parse_time(value: str | None, default_ns: int) -> int:
    """Loki's timestamp parameter: nanoseconds, seconds (a fraction, or ten digits and fewer), RFC 3339."""
    if value is None or value == "":
        return default_ns
    try:
        if "." in value:
            seconds = float(value)
            if not math.isfinite(seconds) or abs(seconds) > 2**33:
                raise QueryError(f"time {value[:40]!r} is out of range")
            return int(round(seconds * SECOND_NS))
        n = int(value)
        ns = n * SECOND_NS if len(value.lstrip("-")) <= 10 else n
        if abs(ns) >= 2**63:
            raise QueryError(f"time {value[:40]!r} is out of range")
        return ns
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * SECOND_NS)
    except ValueError:
        raise QueryError(f"cannot parse {value!r} as a time: give Unix nanoseconds, seconds or RFC 3339") from None


def _step(value: str | None, start: int, end: int) -> int:
    if not value:
        return max(SECOND_NS, (end - start) // 250 // SECOND_NS * SECOND_NS)
    try:
        seconds = float(value)
        if not math.isfinite(seconds) or abs(seconds) > 2**33:
            raise QueryError(f"step {value!r} is not a usable number of seconds")
        step = int(seconds * SECOND_NS)
    except ValueError:
        step = logql.parse_duration(value)
    if step <= 0:
        raise QueryError("zero or negative query resolution step widths are not accepted. Try a positive integer")
    return step


def window(cfg: ServeConfig, args: Mapping[str, str], default_ns: int = 3600 * SECOND_NS) -> tuple[int, int]:
    now = time.time_ns()
    end = parse_time(args.get("end"), now)
    since = args.get("since")
    start = parse_time(args.get("start"), end - (logql.parse_duration(since) if since else default_ns))
    if end < start:
        raise QueryError("end timestamp must not be before or equal to start time")
    if end - start > cfg.max_range_s * SECOND_NS:
        raise QueryError(f"the query time range exceeds the limit (query length: {(end - start) // SECOND_NS}s, "
                         f"limit: {cfg.max_range_s}s); narrow start and end")
    return start, end


def limit_of(cfg: ServeConfig, args: Mapping[str, str]) -> int:
    text = args.get("limit") or str(DEFAULT_LIMIT)
    try:
        limit = int(text)
    except ValueError:
        raise QueryError(f"limit {text!r} is not a whole number") from None
    if limit <= 0:
        raise QueryError("limit must be a positive value")
    if limit > cfg.max_limit:
        raise QueryError(f"max entries limit per query exceeded, limit > max_entries_limit ({limit} > "
                         f"{cfg.max_limit})")
    return limit


def _glob_exact(value: str | None) -> str | None:
    """A glob matching ``value`` alone (for planning from the catalog's facts)."""
    if value is None:
        return None
    return "".join(f"[{c}]" if c in "*?[" else c for c in value)


def _filters(q: logql.LogQuery, since_ns: int, until_ns: int) -> Filters:
    """What the catalog and the needle index plan with: the selector's exact names, the window, a needle."""
    selector = Selector(namespace=_glob_exact(logql.exact(q, "namespace")), pod=_glob_exact(logql.exact(q, "pod")),
                        container=_glob_exact(logql.exact(q, "container")), since_ns=since_ns, until_ns=until_ns)
    traced = logql.traced(q)
    if traced is not None and not _TRACE_ID.fullmatch(traced):
        traced = None   # not a stored trace id: the filter finds nothing, and the trace index is no help
    return Filters(selector, grep=logql.needle(q), trace_id=traced)


def _where(q: logql.LogQuery, filters: Filters) -> tuple[str, list[object]]:
    clauses, params = filters.selector.where()
    more, more_params = logql.where(q)
    return " AND ".join([*clauses, *more]) or "TRUE", [*params, *more_params]


def _query(lake: Lake, what: dict[str, Any], restrict: Restriction, filters: Filters, sql: str,
           params: list[object]) -> pa.Table:
    chosen = plan.select(lake.catalog, filters, lake.keyring.get)
    return lake.query(chosen.files, sql, params, rows=chosen.row_ranges(), what=what, restrict=restrict)


def _labels_of(row: dict[str, Any]) -> dict[str, str]:
    return {name: row[f"l_{name}"] for name in logql.STREAM_LABELS if row[f"l_{name}"]}


def log_lines(lake: Lake, what: dict[str, Any], restrict: Restriction, q: logql.LogQuery, start: int, end: int,
              limit: int, forward: bool) -> pa.Table:
    """The ``limit`` lines nearest the window's start (forward) or end (backward): ns, labels, body."""
    filters = _filters(q, start, end)
    where, params = _where(q, filters)
    selection = Selection(f"epoch_ns(time) AS ns, {LABEL_COLUMNS}, body", where, tuple(params),
                          IN_TIME_ORDER if forward else NEWEST_FIRST, limit)
    chosen = plan.select(lake.catalog, filters, lake.keyring.get)
    return lake.select(chosen.files, selection, rows=chosen.row_ranges(), what=what, restrict=restrict)


def log_streams(lake: Lake, what: dict[str, Any], restrict: Restriction, q: logql.LogQuery, start: int, end: int,
                limit: int, forward: bool) -> Answer:
    """``log_lines`` grouped into streams."""
    table = log_lines(lake, what, restrict, q, start, end, limit, forward)
    streams = streams_of(table)
    return Answer(_success("streams", streams, table.num_rows), table.num_rows, seen_in(streams))


def namespaces_of(table: pa.Table) -> dict[str, int]:
    """Rows of ``table`` by its namespace column (none: nothing to count)."""
    if "namespace" not in table.column_names:
        return {}
    return {v["values"] or "": int(v["counts"]) for v in pc.value_counts(table.column("namespace")).to_pylist()}


def seen_in(streams: list[dict[str, Any]]) -> dict[str, int]:
    """Lines of ``streams`` by namespace."""
    seen: Counter[str] = Counter()
    for s in streams:
        seen[s["stream"].get("namespace", "")] += len(s["values"])
    return dict(seen)


def streams_of(table: pa.Table) -> list[dict[str, Any]]:
    """Rows (ns, l_<label>…, body) as Loki's streams, each stream's lines in the rows' order."""
    streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
    for row in table.to_pylist():
        labels = tuple(_labels_of(row).items())
        streams.setdefault(labels, []).append([str(row["ns"]), row["body"] or ""])
    return [{"stream": dict(labels), "values": values} for labels, values in streams.items()]


def _success(kind: str, result: list[Any], entries: int) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": kind, "result": result,
                                          "stats": {"summary": {"totalEntriesReturned": entries}}}}


def metric(lake: Lake, what: dict[str, Any], restrict: Restriction, cfg: ServeConfig, expr: logql.Expr, start: int,
           end: int, step: int, instant: bool) -> Answer:
    """A metric query evaluated at start, start + step, … end: a matrix (or, instant, a vector at ``end``)."""
    if instant:
        start = end
    points = (end - start) // step + 1
    if points > cfg.max_points:
        raise QueryError(f"exceeded maximum resolution of {cfg.max_points} points per timeseries. Try decreasing "
                         "the query resolution (?step=XX)")
    if isinstance(expr, logql.Scalar):
        samples = [[(start + i * step) / SECOND_NS, _number(expr.value)] for i in range(points)]
        if instant:
            return Answer({"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {}, "value": samples[-1]}], "stats": {}}}, 0)
        return Answer({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {}, "values": samples}], "stats": {}}}, 0)
    if isinstance(expr, logql.LogQuery):
        raise QueryError("log queries are not supported as an instant query type, please change your query to a "
                         "range query type" if instant else "a log query cannot be evaluated as a metric")
    agg = expr if isinstance(expr, logql.VectorAggregation) else None
    rng = expr.inner if isinstance(expr, logql.VectorAggregation) else expr
    if end - start + rng.range_ns > cfg.max_range_s * SECOND_NS:
        raise QueryError(f"the query reads [{start}-{rng.range_ns}, {end}]: more than the limit of {cfg.max_range_s}s "
                         "(max_range_s); shorten the range in brackets or the window")
    if rng.range_ns // step > cfg.max_points:
        raise QueryError(f"the range [{rng.range_ns // SECOND_NS}s] spans more than {cfg.max_points} steps of "
                         f"{step / SECOND_NS:g}s; increase step or shorten the range")
    q = rng.query
    filters = _filters(q, start - rng.range_ns + 1, end + 1)
    where, params = _where(q, filters)
    measure = "strlen(body)" if rng.function.startswith("bytes") else "1"
    # a row at x counts at every point t with t - range < x <= t: indexes ceil((x - start) / step) onwards,
    # below ceil((x + range - start) / step)
    first = f"greatest(0, CAST(ceil((ns - {start}) / {step}::DOUBLE) AS BIGINT))"
    last = f"least({points}, CAST(ceil((ns + {rng.range_ns} - {start}) / {step}::DOUBLE) AS BIGINT))"
    series_labels = [f"l_{n}" for n in logql.STREAM_LABELS]
    if agg is None:
        out_labels = series_labels
    elif agg.without:
        dropped = {"level" if n == "detected_level" else n for n in agg.by or ()}
        out_labels = [f"l_{n}" for n in logql.STREAM_LABELS if n not in dropped]
    else:
        unknown = [n for n in agg.by or () if n not in (*logql.STREAM_LABELS, "detected_level")]
        if unknown:
            raise QueryError(f"grouping by {', '.join(unknown)} is not supported: group by "
                             f"{', '.join(logql.STREAM_LABELS)}")
        out_labels = [f"l_{'level' if n == 'detected_level' else n}" for n in agg.by or ()]
    seconds = rng.range_ns / SECOND_NS
    per_series = f"sum(v) / {seconds}" if rng.function in ("rate", "bytes_rate") else "sum(v)"
    outer = {"sum": "sum(v)", "count": "count(*)", "avg": "avg(v)", "min": "min(v)", "max": "max(v)"}[
        agg.op if agg else "sum"]
    label_list = ", ".join(series_labels)
    group = ", ".join([*out_labels, "i"])
    # nested, not WITH: the statement runs inside the lake's own WITH logs AS (…)
    hits = f"SELECT {LABEL_COLUMNS}, epoch_ns(time) AS ns, {measure} AS v FROM logs WHERE {where}"
    expanded = f"SELECT {label_list}, unnest(range({first}, {last})) AS i, v FROM ({hits})"
    series = f"SELECT {label_list}, i, {per_series} AS v FROM ({expanded}) GROUP BY {label_list}, i"
    sql = f"SELECT {group}, CAST({outer} AS DOUBLE) AS v FROM ({series}) GROUP BY {group} ORDER BY {group}"
    table = _query(lake, what, restrict, filters, sql, params)
    if out_labels and table.group_by(out_labels).aggregate([]).num_rows > cfg.max_series:
        raise QueryError(f"maximum of series ({cfg.max_series}) reached for a single query; aggregate with "
                         "sum by (…) or narrow the selector")
    out: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
    for row in table.to_pylist():
        labels = tuple((c[2:], row[c]) for c in out_labels if row[c])
        out.setdefault(labels, []).append([(start + row["i"] * step) / SECOND_NS, _number(row["v"])])
    seen = dict(Counter(dict(labels).get("namespace", "*") for labels in out))   # series by namespace
    if instant:
        result = [{"metric": dict(labels), "value": values[-1]} for labels, values in out.items()]
        return Answer({"status": "success", "data": {"resultType": "vector", "result": result, "stats": {}}},
                      table.num_rows, seen)
    result = [{"metric": dict(labels), "values": values} for labels, values in out.items()]
    return Answer({"status": "success", "data": {"resultType": "matrix", "result": result, "stats": {}}},
                  table.num_rows, seen)


def _number(v: float) -> str:
    """A sample value as Prometheus writes it: an integer without a fraction, NaN and ±Inf by name."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def query_range(lake: Lake, what: dict[str, Any], restrict: Restriction, cfg: ServeConfig, args: Mapping[str, str],
                instant: bool = False) -> Answer:
    text = args.get("query", "")
    expr = logql.parse(text)
    if instant:
        at = parse_time(args.get("time"), time.time_ns())
        start = end = at
        step = SECOND_NS
    else:
        start, end = window(cfg, args)
        step = _step(args.get("step"), start, end)
    if isinstance(expr, logql.LogQuery) and not instant:
        direction = (args.get("direction") or "backward").lower()
        if direction not in ("forward", "backward"):
            raise QueryError(f"direction {direction!r}: use forward or backward")
        return log_streams(lake, what, restrict, expr, start, end, limit_of(cfg, args), direction == "forward")
    return metric(lake, what, restrict, cfg, expr, start, end, step, instant)


def selected(args: Mapping[str, str], key: str = "query") -> logql.LogQuery | None:
    text = args.get(key)
    if not text:
        return None
    expr = logql.parse(text)
    if not isinstance(expr, logql.LogQuery):
        raise QueryError(f"{key} must be a stream selector such as {{namespace=\"shop\"}}, not a metric query")
    return expr


def _everything(start: int, end: int) -> tuple[logql.LogQuery, Filters]:
    q = logql.LogQuery(())
    return q, Filters(Selector(since_ns=start, until_ns=end))


def labels(lake: Lake, what: dict[str, Any], restrict: Restriction, cfg: ServeConfig, args: Mapping[str, str]) -> Answer:
    """The stream labels with a value among the caller's rows of the window (Loki: the last 6 hours)."""
    start, end = window(cfg, args, 6 * 3600 * SECOND_NS)
    q = selected(args)
    q, filters = (q, _filters(q, start, end)) if q else _everything(start, end)
    where, params = _where(q, filters)
    checks = ", ".join(f"bool_or(l_{n} <> '') AS l_{n}" for n in logql.STREAM_LABELS)
    table = _query(lake, what, restrict, filters,
                   f"SELECT {checks} FROM (SELECT {LABEL_COLUMNS} FROM logs WHERE {where})", params)
    row = table.to_pylist()[0] if table.num_rows else {}
    names = sorted(n for n in logql.STREAM_LABELS if row.get(f"l_{n}"))
    if "level" in names:
        names = sorted([*names, "detected_level"])
    return Answer({"status": "success", "data": names}, len(names))


def label_values(lake: Lake, what: dict[str, Any], restrict: Restriction, cfg: ServeConfig, name: str,
                 args: Mapping[str, str]) -> Answer:
    start, end = window(cfg, args, 6 * 3600 * SECOND_NS)
    if name not in logql.LABELS:
        return Answer({"status": "success", "data": []}, 0)
    q = selected(args)
    q, filters = (q, _filters(q, start, end)) if q else _everything(start, end)
    where, params = _where(q, filters)
    column = logql.LABELS[name]
    table = _query(lake, what, restrict, filters,
                   f"SELECT DISTINCT {column} AS v FROM logs WHERE {where} AND {column} <> '' ORDER BY 1", params)
    values = table.column("v").to_pylist()
    return Answer({"status": "success", "data": values}, len(values),
                  {v: 1 for v in values} if name == "namespace" else {})


def series(lake: Lake, what: dict[str, Any], restrict: Restriction, cfg: ServeConfig, matches: list[str],
           args: Mapping[str, str]) -> Answer:
    """The distinct label sets of streams matching any of ``match[]`` (Loki: the last 6 hours)."""
    start, end = window(cfg, args, 6 * 3600 * SECOND_NS)
    found: set[tuple[tuple[str, str], ...]] = set()
    for text in matches or [""]:
        q = selected({"query": text})
        q, filters = (q, _filters(q, start, end)) if q else _everything(start, end)
        where, params = _where(q, filters)
        table = _query(lake, what, restrict, filters, f"SELECT DISTINCT {LABEL_COLUMNS} FROM logs WHERE {where}",
                       params)
        found |= {tuple(_labels_of(row).items()) for row in table.to_pylist()}
    data = [dict(labels) for labels in sorted(found)]
    return Answer({"status": "success", "data": data}, len(data), dict(Counter(d.get("namespace", "") for d in data)))


def index_stats(lake: Lake, what: dict[str, Any], restrict: Restriction, cfg: ServeConfig,
                args: Mapping[str, str]) -> Answer:
    """Streams, chunks (files), entries and bytes of the caller's rows a selector matches."""
    start, end = window(cfg, args)
    q = selected(args)
    q, filters = (q, _filters(q, start, end)) if q else _everything(start, end)
    where, params = _where(q, filters)
    chosen = plan.select(lake.catalog, filters, lake.keyring.get)
    labels = ", ".join(f"l_{n}" for n in logql.STREAM_LABELS)
    sql = (f"SELECT count(DISTINCT [{labels}]) AS s, count(*) AS e, CAST(coalesce(sum(n), 0) AS BIGINT) AS b "
           f"FROM (SELECT {LABEL_COLUMNS}, strlen(body) AS n FROM logs WHERE {where})")
    table = lake.query(chosen.files, sql, params, rows=chosen.row_ranges(), what=what, restrict=restrict)
    row = table.to_pylist()[0]
    doc = {"streams": row["s"], "chunks": len(restrict.files(chosen.files)) if row["e"] else 0, "entries": row["e"],
           "bytes": row["b"]}
    return Answer(doc, 1)


def _volume_labels(q: logql.LogQuery, args: Mapping[str, str]) -> tuple[str, ...]:
    """What a volume is grouped by: ``targetLabels``, else the labels the selector names (Loki's way)."""
    named = [t.strip() for t in (args.get("targetLabels") or "").split(",") if t.strip()] or \
        [m.label for m in q.matchers]
    return tuple(dict.fromkeys("level" if n == "detected_level" else n for n in named if n in (
        *logql.STREAM_LABELS, "detected_level")))


def volume(lake: Lake, what: dict[str, Any], restrict: Restriction, cfg: ServeConfig, args: Mapping[str, str],
           ranged: bool = False) -> Answer:
    """Bytes of the caller's lines a selector matches, by its labels: a vector over the window, or with
    ``ranged`` (``volume_range``) a matrix of ``step``-long buckets."""
    start, end = window(cfg, args)
    q = selected(args)
    if q is None:
        raise QueryError("volume needs query, a stream selector such as {namespace=\"shop\"}")
    by = _volume_labels(q, args)
    if ranged:
        step = _step(args.get("step"), start, end)
        expr = logql.VectorAggregation("sum", logql.RangeAggregation("bytes_over_time", q, step), by)
        return metric(lake, what, restrict, cfg, expr, start, end, step, instant=False)
    limit = limit_of(cfg, args)
    filters = _filters(q, start, end)
    where, params = _where(q, filters)
    columns = ", ".join(f"{logql.LABELS[n]} AS l_{n}" for n in by)
    group = ", ".join(f"l_{n}" for n in by)
    sql = (f"SELECT {columns + ', ' if columns else ''}CAST(sum(strlen(body)) AS BIGINT) AS v FROM logs "
           f"WHERE {where}{' GROUP BY ' + group if group else ''} ORDER BY v DESC LIMIT {limit}")
    table = _query(lake, what, restrict, filters, sql, params)
    result = [{"metric": {n: row[f"l_{n}"] for n in by if row[f"l_{n}"]}, "value": [end / SECOND_NS, str(row["v"])]}
              for row in table.to_pylist() if row["v"] is not None]
    return Answer({"status": "success", "data": {"resultType": "vector", "result": result}}, len(result))


def buildinfo() -> dict[str, Any]:
    return {"version": version(), "revision": "", "branch": "", "buildUser": "", "buildDate": "",
            "goVersion": "", "application": "loglake"}

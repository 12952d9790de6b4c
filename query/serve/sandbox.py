"""SQL a caller wrote, run where it can reach nothing but the rows it may read.

The lake's own DuckDB database holds every data key (``PRAGMA add_parquet_key``) and may read the tier
directories, so SQL in it could name ``read_parquet`` on a lake file with a key's name and read past any
grant. So a caller's SQL never runs there. The service reads the caller's rows of the window (the grant
applied by the ``logs`` relation, an audited query of its own) and hands them to a new in-memory DuckDB
database that has no keys, no files and no extensions, whose configuration is locked before the SQL
arrives: ``enable_external_access = false`` (no file, URL or environment variable), a memory limit, one
statement that must be a SELECT (``query.connect.check_read_only``), a time limit (the query is
interrupted) and a row limit. Whatever that SQL does (joins, window functions, ``error()`` with a value
in it) it does to granted rows alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pyarrow as pa

from query import output, plan
from query.connect import Lake, Restriction, Sandbox, check_read_only
from query.filters import Filters
from lake.selector import Selector
from query.serve import loki
from query.serve.config import ServeConfig
from runtime.errors import QueryError


def table(lake: Lake, what: dict[str, Any], restrict: Restriction, cfg: ServeConfig, sql: str,
          since_ns: int | None = None, until_ns: int | None = None) -> tuple[pa.Table, bool, dict[str, int]]:
    """``sql`` over the caller's rows of [since, until) (default: all of them, up to
    ``sql_max_input_rows``): its first ``sql_max_rows`` rows, whether there were more, and the rows it was
    given by namespace."""
    if not sql.strip():
        raise QueryError("give the SQL in query, e.g. SELECT container, count(*) FROM logs GROUP BY ALL")
    check_read_only(sql)   # refused before anything is read
    filters = Filters(Selector(since_ns=since_ns, until_ns=until_ns))
    where, params = filters.where()
    chosen = plan.select(lake.catalog, filters, lake.keyring.get)
    rows = lake.query(chosen.files, f"SELECT * FROM logs WHERE {where} LIMIT {cfg.sql_max_input_rows + 1}", params,
                      rows=chosen.row_ranges(), what={**what, "sandbox_sql": sql[:4096]}, restrict=restrict)
    if rows.num_rows > cfg.sql_max_input_rows:
        raise QueryError(f"the window holds more than {cfg.sql_max_input_rows} rows you may read "
                              "([serve] sql_max_input_rows); narrow it (start and end)")
    given = loki.namespaces_of(rows)
    box = Sandbox(rows, cfg.sql_memory_limit)
    try:
        result, more = box.first(sql, cfg.sql_max_rows, cfg.sql_timeout_s)
    finally:
        box.close()
    return result, more, given


def run(lake: Lake, what: dict[str, Any], restrict: Restriction, cfg: ServeConfig, args: Mapping[str, str]) -> loki.Answer:
    """``/api/v1/sql``: ``query`` over the caller's rows of ``start``..``end`` (default all), as JSON."""
    since = loki.parse_time(args["start"], 0) if args.get("start") else None
    until = loki.parse_time(args["end"], 0) if args.get("end") else None
    result, truncated, given = table(lake, what, restrict, cfg, args.get("query", ""), since, until)
    shown = output.timestamps_as_text(result, "UTC")   # nanoseconds kept, as the CLI prints them
    doc = {"status": "success", "data": {"columns": result.column_names,
                                         "rows": [list(r.values()) for r in shown.to_pylist()],
                                         "truncated": truncated}}
    return loki.Answer(orjson.loads(orjson.dumps(doc, default=str)), result.num_rows, given)

"""loglake-query: ask the stored logs: SQL, or a trace across every service."""

from __future__ import annotations

import argparse
import sys
import time

from query import output, plan
from query.connect import Lake, connect, run_sql
from schemas.errors import LoglakeError

TRACE_COLUMNS = "time, namespace, pod, container, severity_text AS level, span_id, body"


def _sql(args: argparse.Namespace) -> None:
    output.write(run_sql(connect(args.config), args.query), args.format)


def _trace(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    lake = Lake(args.config)
    try:
        chosen = plan.trace(lake.catalog, args.trace_id)
        con = lake.view(chosen.files)
    finally:
        lake.close()
    result = run_sql(con, f"SELECT {TRACE_COLUMNS} FROM logs WHERE trace_id = ? ORDER BY time, record_id",
                     [args.trace_id])
    output.write(result, args.format)
    if args.explain:
        print(f"plan: trace index chose {chosen.describe()}; {result.num_rows} rows in "
              f"{(time.perf_counter() - started) * 1000:.1f} ms", file=sys.stderr)
        for f in chosen.files:
            print(f"  {f.tier} {f.path} row groups {chosen.row_groups[f.path]}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loglake-query", description=__doc__)
    parser.add_argument("--config", "-c", help="loglake TOML file (LOGLAKE_* variables override it)")
    parser.add_argument("--format", "-f", choices=output.FORMATS, default="table")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    sql = sub.add_parser("sql", help="run DuckDB SQL against the view 'logs'")
    sql.add_argument("query")
    tr = sub.add_parser("trace", help="every line of a trace, across services, in time order")
    tr.add_argument("trace_id")
    tr.add_argument("--explain", action="store_true", help="print the files and row groups chosen (to stderr)")
    args = parser.parse_args(argv)
    try:
        _trace(args) if args.command == "trace" else _sql(args)
    except LoglakeError as e:
        if args.debug:
            raise
        print(f"loglake-query: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

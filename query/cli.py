"""loglake-query: ask the stored logs with SQL."""

from __future__ import annotations

import argparse
import sys

from query import output
from query.connect import connect, run_sql
from schemas.errors import LoglakeError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loglake-query", description=__doc__)
    parser.add_argument("--config", "-c", help="loglake TOML file (LOGLAKE_* variables override it)")
    parser.add_argument("--format", "-f", choices=output.FORMATS, default="table")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    sql = sub.add_parser("sql", help="run DuckDB SQL against the view 'logs'")
    sql.add_argument("query")
    args = parser.parse_args(argv)
    try:
        con = connect(args.config)
        output.write(run_sql(con, args.query), args.format)
    except LoglakeError as e:
        if args.debug:
            raise
        print(f"loglake-query: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

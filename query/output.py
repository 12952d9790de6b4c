"""Printing a result as an aligned table, JSON lines or CSV."""

from __future__ import annotations

import csv
import datetime as dt
import sys
from typing import IO, Any

import orjson
import pyarrow as pa

FORMATS = ("table", "json", "csv")
MAX_CELL = 120


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(v)


def write(table: pa.Table, fmt: str, out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    columns = table.column_names
    rows = list(zip(*(table.column(i).to_pylist() for i in range(table.num_columns)))) if columns else []
    if fmt == "json":
        for row in rows:
            out.write(orjson.dumps(dict(zip(columns, row)), default=_text,
                                   option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z).decode() + "\n")
    elif fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns)
        w.writerows([_text(v) for v in row] for row in rows)
    else:
        cells = [[_text(v).replace("\n", "\\n")[:MAX_CELL] for v in row] for row in rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip() + "\n")
        out.write("  ".join("-" * w for w in widths) + "\n")
        for r in cells:
            out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
        out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")

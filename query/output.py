"""Printing a result as an aligned table, JSON lines or CSV."""

from __future__ import annotations

import csv
import sys
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

FORMATS = ("table", "json", "csv")
MAX_CELL = 120


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _timestamps_as_text(table: pa.Table) -> pa.Table:
    """Timestamps as RFC 3339 UTC text, nanoseconds kept (Python datetimes stop at microseconds)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            col = table.column(i)
            if field.type.tz is not None:
                col = col.cast(pa.timestamp(field.type.unit))
            table = table.set_column(i, field.name, pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ"))
    return table


def write(table: pa.Table, fmt: str, out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    table = _timestamps_as_text(table)
    columns = table.column_names
    rows = list(zip(*(table.column(i).to_pylist() for i in range(table.num_columns)))) if columns else []
    if fmt == "json":
        for row in rows:
            out.write(orjson.dumps(dict(zip(columns, row)), default=_text).decode() + "\n")
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

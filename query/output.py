"""Printing a result as an aligned table, JSON lines or CSV."""

from __future__ import annotations

import csv
import os
import sys
import zoneinfo
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runtime.errors import QueryError

# kubectl's -o words: table cuts a cell at MAX_CELL (marked …), wide never cuts; json and jsonl are both
# one object per line (what logcli and jq expect from a stream of log lines).
FORMATS = ("table", "wide", "json", "jsonl", "csv")
MAX_CELL = 120


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def timestamps_as_text(table: pa.Table, tz: str) -> pa.Table:
    """Timestamps as RFC 3339 text in ``tz``, nanoseconds kept (Python datetimes stop at microseconds)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            col = table.column(i)
            if field.type.tz is not None:
                col = col.cast(pa.timestamp(field.type.unit))
            if tz == "UTC":
                text = pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ")
            else:
                local = col.cast(pa.timestamp(field.type.unit, tz="UTC")).cast(pa.timestamp(field.type.unit, tz=tz))
                text = pc.strftime(local, format="%Y-%m-%dT%H:%M:%S%z")
            table = table.set_column(i, field.name, text)
    return table


def reversed_rows(table: pa.Table) -> pa.Table:
    """The rows last to first. The indices are typed: an empty Python list would be a null-typed array,
    which Arrow cannot take with (the crash of issue 13 on an empty result)."""
    return table.take(pa.array(range(table.num_rows - 1, -1, -1), type=pa.int64()))


def check_tz(tz: str) -> str:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise QueryError(f"unknown time zone {tz!r}: use an IANA name like Europe/Berlin or UTC") from None
    return tz


def _cell(v: Any, wide: bool) -> str:
    text = _text(v).replace("\n", "\\n")
    return text if wide or len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def write(table: pa.Table, fmt: str, out: IO[str] | None = None, *, tz: str = "UTC", header: bool = True) -> None:
    out = out or sys.stdout
    table = timestamps_as_text(table, tz)
    columns = table.column_names
    rows = list(zip(*(table.column(i).to_pylist() for i in range(table.num_columns)))) if columns else []
    if fmt in ("json", "jsonl"):
        for row in rows:
            out.write(orjson.dumps(dict(zip(columns, row)), default=_text).decode() + "\n")
    elif fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        if header:
            w.writerow(columns)
        w.writerows([_text(v) for v in row] for row in rows)
    else:
        cells = [[_cell(v, fmt == "wide") for v in row] for row in rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        if header:
            out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip() + "\n")
            out.write("  ".join("-" * w for w in widths) + "\n")
        for r in cells:
            out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
        if header:
            out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
    out.flush()


def parquet_bytes(table: pa.Table) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    return bytes(buf.getvalue())


def write_parquet(table: pa.Table, path: str) -> None:
    """A plain (unencrypted) Parquet file of a result, for large exports: readable by its owner only, and
    never written through a file that is already there (a planted symlink, someone else's file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise QueryError(f"{path} already exists; choose a new file for --output") from None
    except OSError as e:
        raise QueryError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f, compression="zstd")
    except OSError as e:
        os.unlink(path)
        raise QueryError(f"cannot write {path}: {e.strerror or e}") from None


def emit(table: pa.Table, fmt: str, output_file: str | None, tz: str) -> None:
    """A command's result: to ``output_file`` as Parquet (saying so on stderr), else printed as ``fmt``."""
    if output_file:
        write_parquet(table, output_file)
        print(f"wrote {table.num_rows} rows to {output_file}", file=sys.stderr)
    else:
        write(table, fmt, tz=tz)


def summary(fmt: str, lines: list[str], doc: dict[str, object]) -> None:
    """A command's outcome: its lines, or with -o json (jsonl) one JSON object for a script."""
    if fmt in ("json", "jsonl"):
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        for line in lines:
            print(line)

"""DuckDB connections with the httpfs extension loaded from its PyPI package.

httpfs brings OpenSSL into DuckDB (encrypted Parquet writes need it) and s3://.
Loading it from the installed ``duckdb-extension-httpfs`` package path means no
network access and no extension download at run time.

Stored files do not all have the same columns: files written before
``trace_flags`` and ``resource`` existed lack them (schemas.record). DuckDB
reads a list of files with the first file's columns, so a file without one of
them cannot share a ``read_parquet`` with files that have it, and
``union_by_name`` cannot be used on encrypted files (DuckDB 1.5 fails on the
combination: duckdb/duckdb#21508). ``scan_sql`` therefore reads each set of
files with the same columns with its own ``read_parquet`` and gives the columns
a file lacks as typed nulls, so every scan has exactly the columns of
``schemas.record.LOG_SCHEMA``, in its order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import duckdb_extension_httpfs
import pyarrow as pa

from runtime.errors import StorageError
from schemas.record import FIRST_FIELD_NAMES, LOG_SCHEMA

if TYPE_CHECKING:
    from lake.keys import DataKey


# What other modules need of DuckDB, named here so that this is the one module importing it.
Connection = duckdb.DuckDBPyConnection
Error = duckdb.Error
WriteError = (duckdb.IOException, duckdb.HTTPException)


def httpfs_path() -> Path:
    root = Path(duckdb_extension_httpfs.__file__).parent / "extensions"
    found = sorted(root.glob(f"v{duckdb.__version__}/httpfs.duckdb_extension"))
    if not found:
        raise StorageError(f"the httpfs extension for DuckDB {duckdb.__version__} is not installed under {root}; "
                           f"install duckdb-extension-httpfs=={duckdb.__version__}")
    return found[0]


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    config: dict[str, str | bool | int | float | list[str]] = {"autoinstall_known_extensions": False,
                                                              "autoload_known_extensions": False}
    if threads:
        config["threads"] = threads
    con = duckdb.connect(config=config)
    con.execute(f"LOAD '{httpfs_path()}'")
    return con


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0]


_SQL_TYPES = {pa.timestamp("ns"): "TIMESTAMP_NS", pa.string(): "VARCHAR", pa.int32(): "INTEGER",
              pa.int64(): "BIGINT"}
COLUMNS: tuple[str, ...] = tuple(LOG_SCHEMA.names)
ALL_COLUMNS = frozenset(COLUMNS)
FIRST_COLUMNS = frozenset(FIRST_FIELD_NAMES)  # every stored file has these


def sql_type(t: pa.DataType) -> str:
    return _SQL_TYPES[t]


def projection(present: Collection[str] = ALL_COLUMNS) -> str:
    """The record's columns in LOG_SCHEMA order, from a scan with the columns ``present``: the others as
    typed nulls."""
    return ", ".join(f.name if f.name in present else f"NULL::{sql_type(f.type)} AS {f.name}" for f in LOG_SCHEMA)


# No rows, every column with its type: united BY NAME with a relation that may lack columns, it gives them.
EMPTY_SQL = f"SELECT {projection(())} WHERE false"


def typed_sql(query: str) -> str:
    """``query``'s rows with exactly LOG_SCHEMA's columns and types: missing ones null, extra ones dropped."""
    cast = ", ".join(f"CAST({f.name} AS {sql_type(f.type)}) AS {f.name}" for f in LOG_SCHEMA)
    return f"SELECT {cast} FROM ({EMPTY_SQL} UNION ALL BY NAME SELECT * FROM ({query}))"


class KeyRegistry:
    """Data keys known to one DuckDB connection (``PRAGMA add_parquet_key``), registered once each; and the
    columns of files read with it, looked at once each (see ``columns``)."""

    COLUMN_CACHE = 16384

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._ids: set[str] = set()
        self._columns: OrderedDict[tuple[str, str], frozenset[str]] = OrderedDict()

    def add(self, key: DataKey) -> str:
        if key.key_id not in self._ids:
            self.con.execute(f"PRAGMA add_parquet_key('{key.key_id}', '{key.b64}')")
            self._ids.add(key.key_id)
        return key.key_id

    def columns(self, key: DataKey, path: str) -> frozenset[str]:
        """The record columns the file has (its footer, read through DuckDB: it is encrypted). A file is
        written once under a key (a rewrite takes a new one), so (key, path) names its content."""
        ident = (key.key_id, path)
        found = self._columns.get(ident)
        if found is None:
            enc = f"encryption_config={{footer_key: '{self.add(key)}'}}"
            names = self.con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_str(path)}, {enc})").fetchall()
            found = frozenset(n for n, *_ in names) & ALL_COLUMNS
            if not FIRST_COLUMNS <= found:
                raise StorageError(f"{path} is not a loglake file: it lacks the columns "
                                   f"{', '.join(sorted(FIRST_COLUMNS - found))}; run 'loglake-aggregator verify'")
            self._columns[ident] = found
            if len(self._columns) > self.COLUMN_CACHE:
                self._columns.popitem(last=False)
        else:
            self._columns.move_to_end(ident)
        return found


def scan_sql(keys: KeyRegistry, files: Mapping[DataKey, Sequence[str]],
             rows: Mapping[str, Sequence[tuple[int, int]]] | None = None, *, probe: bool = True) -> str:
    """One relation over encrypted files: the union of their ``scan_parts``."""
    return " UNION ALL ".join(scan_parts(keys, files, rows, probe=probe))


def scan_parts(keys: KeyRegistry, files: Mapping[DataKey, Sequence[str]],
               rows: Mapping[str, Sequence[tuple[int, int]]] | None = None, *, probe: bool = True) -> list[str]:
    """Scans that together read the encrypted ``files`` once, each with exactly LOG_SCHEMA's columns: a
    read_parquet per data key (DuckDB takes one footer key per call) and set of columns. A file given row
    ranges in ``rows`` (inclusive first, last row numbers) is read alone, restricted to them: DuckDB then
    skips every row group outside the ranges without reading it.

    ``probe``: look at each file's columns first (KeyRegistry.columns; cached). Without it every file is
    taken to have them all, which costs nothing, and a file that does not makes the query fail: with a
    BinderException naming the column when it is the first of its key's list (give the oldest first), else
    with "schema mismatch" when it is read (query.connect falls back to probing)."""
    rows = rows or {}
    parts = []
    for key, paths in sorted(files.items(), key=lambda kv: kv[0].key_id):
        enc = f"encryption_config={{footer_key: '{keys.add(key)}'}}"
        have = {p: keys.columns(key, p) if probe else ALL_COLUMNS for p in paths}
        groups: dict[frozenset[str], list[str]] = {}
        for p in paths:
            if p not in rows:
                groups.setdefault(have[p], []).append(p)
        for present, whole in groups.items():
            parts.append(f"SELECT {projection(present)} FROM read_parquet([{', '.join(sql_str(p) for p in whole)}], "
                         f"{enc})")
        for p in paths:
            # one scan per range: DuckDB 1.5.5 skips row groups outside an OR of ranges as well, but a trace
            # read that way (one scan a file) was slower at 100M records, 26.9 vs 23.4 ms p50 interleaved
            parts += [f"SELECT {projection(have[p])} FROM read_parquet({sql_str(p)}, {enc}, file_row_number=true) "
                      f"WHERE file_row_number BETWEEN {a} AND {b}" for a, b in rows.get(p, ())]
    return parts

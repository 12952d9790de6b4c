"""DuckDB connections with the httpfs extension loaded from its PyPI package.

httpfs brings OpenSSL into DuckDB (encrypted Parquet writes need it) and s3://.
Loading it from the installed ``duckdb-extension-httpfs`` package path means no
network access and no extension download at run time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import duckdb_extension_httpfs

from aggregator.errors import StorageError

if TYPE_CHECKING:
    from aggregator.keys import DataKey


def httpfs_path() -> Path:
    root = Path(duckdb_extension_httpfs.__file__).parent / "extensions"
    found = sorted(root.glob(f"v{duckdb.__version__}/httpfs.duckdb_extension"))
    if not found:
        raise StorageError(f"the httpfs extension for DuckDB {duckdb.__version__} is not installed under {root}; "
                           f"install duckdb-extension-httpfs=={duckdb.__version__}")
    return found[0]


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    config: dict[str, object] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    if threads:
        config["threads"] = threads
    con = duckdb.connect(config=config)
    con.execute(f"LOAD '{httpfs_path()}'")
    return con


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0]


class KeyRegistry:
    """Data keys known to one DuckDB connection (``PRAGMA add_parquet_key``), registered once each."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._ids: set[str] = set()

    def add(self, key: DataKey) -> str:
        if key.key_id not in self._ids:
            self.con.execute(f"PRAGMA add_parquet_key('{key.key_id}', '{key.b64}')")
            self._ids.add(key.key_id)
        return key.key_id


def scan_sql(keys: KeyRegistry, files: Mapping[DataKey, Sequence[str]],
             rows: Mapping[str, Sequence[tuple[int, int]]] | None = None) -> str:
    """One relation over encrypted files: a read_parquet per data key (DuckDB takes one footer key per call).
    A file given row ranges in ``rows`` (inclusive first, last row numbers) is read alone, restricted to
    them: DuckDB then skips every row group outside the ranges without reading it."""
    rows = rows or {}
    parts = []
    for key, paths in sorted(files.items(), key=lambda kv: kv[0].key_id):
        enc = f"encryption_config={{footer_key: '{keys.add(key)}'}}"
        whole = [p for p in paths if p not in rows]
        if whole:
            parts.append(f"SELECT * FROM read_parquet([{', '.join(sql_str(p) for p in whole)}], {enc})")
        for p in paths:
            # one scan per range: DuckDB skips row groups for a single BETWEEN, not for an OR of them
            parts += [f"SELECT * EXCLUDE (file_row_number) FROM read_parquet({sql_str(p)}, {enc}, "
                      f"file_row_number=true) WHERE file_row_number BETWEEN {a} AND {b}" for a, b in rows.get(p, ())]
    return " UNION ALL ".join(parts)

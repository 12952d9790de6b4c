"""A DuckDB connection with the ``logs`` view over every stored file.

The file list comes from the catalog, never from a directory listing, so a
query sees exactly the committed files. Decryption is transparent: the key is
registered with DuckDB and every file is read with it.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from aggregator import config as agg_config
from aggregator import duck
from aggregator.catalog import Catalog
from aggregator.keys import KeyRing, master_for
from aggregator.errors import EncryptionKeyError
from query.errors import QueryError
from schemas.record import LOG_SCHEMA, RECORD_ID_SQL


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def connect(config_path: str | None = None, env: dict[str, str] | None = None) -> duckdb.DuckDBPyConnection:
    settings = agg_config.load(config_path, env)
    cfg = settings.aggregator
    catalog = Catalog(cfg.catalog_path)
    try:
        ring = KeyRing(catalog, master_for(cfg))
        files = catalog.files()
        by_key: dict[str, list[str]] = {}
        for f in files:
            by_key.setdefault(f.key_id, []).append(str(cfg.data_dir / f.path))
        data_keys = [ring.get(key_id) for key_id in sorted(by_key)]
    finally:
        catalog.close()
    con = duck.connect()
    con.execute("SET TimeZone = 'UTC'")
    # One read_parquet per data key (DuckDB takes one footer key per call).
    sources = []
    for key in data_keys:
        con.execute(f"PRAGMA add_parquet_key('{key.key_id}', '{key.b64}')")
        paths = ", ".join(_sql_str(p) for p in by_key[key.key_id])
        sources.append(f"SELECT * FROM read_parquet([{paths}], encryption_config={{footer_key: '{key.key_id}'}})")
    if not sources:
        con.register("_no_files", LOG_SCHEMA.empty_table())
        sources = ["SELECT * FROM _no_files"]
    con.execute(f"CREATE VIEW logs AS SELECT *, {RECORD_ID_SQL} AS record_id FROM ({' UNION ALL '.join(sources)})")
    return con


def run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Run SQL and fetch the result as Arrow, turning DuckDB's errors into one actionable sentence."""
    try:
        return con.execute(sql).to_arrow_table()
    except duckdb.InvalidInputException as e:
        if "AES tag" in str(e) or "encrypted" in str(e):
            raise EncryptionKeyError("stored files cannot be decrypted with the configured key; "
                                     "point [aggregator] key_file at the key they were written with") from None
        raise QueryError(f"query failed: {_first_line(e)}") from None
    except duckdb.Error as e:
        raise QueryError(f"query failed: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0]

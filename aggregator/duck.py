"""DuckDB connections with the httpfs extension loaded from its PyPI package.

httpfs brings OpenSSL into DuckDB (encrypted Parquet writes need it) and s3://.
Loading it from the installed ``duckdb-extension-httpfs`` package path means no
network access and no extension download at run time.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import duckdb_extension_httpfs

from aggregator.errors import StorageError


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

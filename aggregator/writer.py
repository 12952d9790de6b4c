"""Arrow tables → encrypted Parquet files, made durable before anyone is told.

DuckDB writes the file (Parquet modular encryption, AES-GCM) under a temporary
name; the file is fsynced, renamed to its final name and the directory fsynced.
Only then may the catalog list it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from aggregator import duck
from aggregator.errors import StorageError
from aggregator.keys import DataKey
from schemas.durable import fsync_path

# Rows sorted so a container's lines sit together: better compression and
# row-group statistics that prune by namespace, container and time.
SORT_ORDER = "namespace, pod, container, time, source_id, source_offset"


@dataclass(frozen=True)
class Written:
    bytes: int
    sha256: str
    rows: int
    min_time: int
    max_time: int
    namespaces: tuple[str, ...]
    containers: tuple[str, ...]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def describe(table: pa.Table) -> tuple[int, int, tuple[str, ...], tuple[str, ...]]:
    """min/max event time (ns) and the distinct namespaces and containers of a table."""
    times = table.column("time").cast(pa.int64())
    mm = pc.min_max(times)
    namespaces = tuple(sorted(v for v in pc.unique(table.column("namespace")).to_pylist() if v))
    triples = pa.Table.from_arrays([table.column(c) for c in ("namespace", "pod", "container")],
                                   names=["n", "p", "c"]).group_by(["n", "p", "c"]).aggregate([])
    containers = tuple(sorted(f"{n or ''}/{p or ''}/{c or ''}" for n, p, c in
                              zip(*(triples.column(x).to_pylist() for x in ("n", "p", "c")))))
    return mm["min"].as_py(), mm["max"].as_py(), namespaces, containers


class ParquetWriter:
    def __init__(self, *, row_group_size: int, zstd_level: int) -> None:
        self.row_group_size = row_group_size
        self.zstd_level = zstd_level
        self.con = duck.connect()
        self._registered: set[str] = set()

    def copy_options(self, key: DataKey) -> str:
        if key.key_id not in self._registered:
            self.con.execute(f"PRAGMA add_parquet_key('{key.key_id}', '{key.b64}')")
            self._registered.add(key.key_id)
        return (f"FORMAT parquet, ENCRYPTION_CONFIG {{footer_key: '{key.key_id}'}}, COMPRESSION zstd, "
                f"COMPRESSION_LEVEL {self.zstd_level}, ROW_GROUP_SIZE {self.row_group_size}")

    def write(self, table: pa.Table, dest: Path, key: DataKey) -> Written:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        self.con.register("_batch", table)
        try:
            self.con.execute(f"COPY (SELECT * FROM _batch ORDER BY {SORT_ORDER}) TO '{tmp}' ({self.copy_options(key)})")
            fsync_path(tmp)
            os.rename(tmp, dest)
            fsync_path(dest.parent)
        except (duckdb.IOException, OSError) as e:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write {dest}: {e}; free space or fix permissions, "
                               "consumption resumes from the last committed position") from None
        finally:
            self.con.unregister("_batch")
        min_time, max_time, namespaces, containers = describe(table)
        return Written(dest.stat().st_size, sha256_file(dest), table.num_rows, min_time, max_time,
                       namespaces, containers)

"""Query results → encrypted Parquet files, described and made durable before anyone is told.

Every file of every tier is written the same way: DuckDB runs ``COPY (query
ORDER BY …)`` with Parquet modular encryption (AES-GCM) to the target's staging
name; the file is then read back to describe what it really holds (rows, time
range, namespaces, containers, the trace index entries, sha256), and published
(fsync, rename, directory fsync). Only then may the catalog list it.

Every file gets exactly the columns of schemas.record.LOG_SCHEMA, in its order
and with its types, whatever the query gives (duck.typed_sql): a scan of files
written before a column existed gives it as null (duck.scan_sql), so compacting
or rewriting them brings them up to the current schema.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import pyarrow as pa

from lake import duck, needle_index, trace_index
from lake.catalog.model import FileEntry, NeedleFilter, NewFile, Tier, TraceEntry
from lake.keys import DataKey
from lake.storage import Layout, Storage, Target, digest
from runtime.errors import StorageError

# Rows sorted by hour, then container, then time: a container's lines of an hour
# sit together (compression, row-group statistics that prune by namespace,
# container and time), and a trace, whose lines are close in time, stays in the
# row groups of one hour even in a day-long cold file.
SORT_ORDER = "date_trunc('hour', time), namespace, pod, container, time, source_id, source_offset"
_NEEDLE_BATCH_ROWS = 65_536   # bodies handed to the native needle builder at a time: bounded memory


@dataclass(frozen=True)
class Written:
    bytes: int
    sha256: str
    rows: int
    row_groups: int
    row_group_rows: int
    min_time: int
    max_time: int
    namespaces: tuple[str, ...]
    containers: tuple[str, ...]
    traces: tuple[TraceEntry, ...]
    needles: NeedleFilter | None   # warm and cold files only (see lake.storage.Layout)

    def new_file(self, *, path: str, tier: Tier, topic: str, partition: str, first_offset: int, last_offset: int,
                 key_id: str, created_at: int, key_lineage: tuple[str, ...] = ()) -> NewFile:
        entry = FileEntry(path=path, tier=tier, topic=topic, partition=partition, first_offset=first_offset,
                          last_offset=last_offset, min_time=self.min_time, max_time=self.max_time, rows=self.rows,
                          bytes=self.bytes, row_groups=self.row_groups,
                          row_group_rows=self.row_group_rows, sha256=self.sha256, key_id=key_id,
                          namespaces=self.namespaces, containers=self.containers, created_at=created_at,
                          key_lineage=tuple(sorted(set(key_lineage) - {key_id})))
        return NewFile(entry, self.traces, self.needles)


def _discard(target: Target) -> None:
    """Remove the staging file of a failed write. The failure that stopped the write is the one to report:
    removing can fail for the same cause (a read-only remount, a missing directory), and a staging file left
    behind is an orphan that aggregator.tidy removes."""
    with contextlib.suppress(OSError):
        target.discard()


class ParquetWriter:
    def __init__(self, storage: Storage, threads: int | None = None) -> None:
        self.con = duck.connect(threads)
        storage.configure(self.con)
        self._keys = duck.KeyRegistry(self.con)

    def scan(self, files: dict[DataKey, list[str]]) -> str:
        """SQL reading the given files (grouped by data key) as one relation with LOG_SCHEMA's columns
        (a file's columns are looked at once, then remembered)."""
        return duck.scan_sql(self._keys, files)

    def write_table(self, table: pa.Table, target: Target, key: DataKey, layout: Layout) -> Written:
        self.con.register("_batch", table)
        try:
            return self.write("SELECT * FROM _batch", target, key, layout)
        finally:
            self.con.unregister("_batch")

    def write(self, query: str, target: Target, key: DataKey, layout: Layout) -> Written:
        # Parquet V2 pages: delta encodings store the sorted timestamps and offsets about 4x smaller.
        options = (f"FORMAT parquet, ENCRYPTION_CONFIG {{footer_key: '{self._keys.add(key)}'}}, COMPRESSION zstd, "
                   f"COMPRESSION_LEVEL {layout.zstd_level}, ROW_GROUP_SIZE {layout.row_group_size}, PARQUET_VERSION V2")
        try:
            self.con.execute(f"COPY (SELECT * FROM ({duck.typed_sql(query)}) ORDER BY {SORT_ORDER}) "
                             f"TO '{target.staging}' ({options})")
            written = self._describe(target.staging, key, layout)
            target.publish()
        except (*duck.WriteError, OSError) as e:
            _discard(target)
            raise StorageError(f"cannot write {target.final}: {duck.first_line(e)}; free space or fix permissions, "
                               "the work resumes from the last committed state") from None
        except BaseException:
            _discard(target)
            raise
        return written

    def _describe(self, location: str, key: DataKey, layout: Layout) -> Written:
        scan = f"read_parquet('{location}', encryption_config={{footer_key: '{key.key_id}'}}, file_row_number=true)"
        rows, min_t, max_t, namespaces, containers = self.con.execute(
            "SELECT count(*), epoch_ns(min(time)), epoch_ns(max(time)), "
            "list_sort(list(DISTINCT namespace) FILTER (WHERE namespace IS NOT NULL)), "
            "list_sort(list(DISTINCT concat_ws('/', coalesce(namespace, ''), coalesce(pod, ''), "
            f"coalesce(container, '')))) FROM {scan}").fetchone()  # type: ignore[misc]  # one row: an aggregate
        groups = math.ceil(rows / layout.row_group_size)
        traces = self.con.execute(trace_index.entries_sql(scan, "file_row_number", layout.row_group_size)).fetchall()
        size, sha = digest(location, self.con)
        return Written(size, sha, rows, groups, layout.row_group_size, min_t or 0, max_t or 0, tuple(namespaces or ()),
                       tuple(containers or ()), tuple(traces),
                       self._needles(scan, key, layout, groups) if layout.needle_index else None)

    def _needles(self, scan: str, key: DataKey, layout: Layout, groups: int) -> NeedleFilter:
        """The file's needle index (lake.needle_index): every row group's filter sized for the fullest one."""
        salt = os.urandom(16).hex()
        key_hex = needle_index.index_key(key, salt)
        batches = self.con.execute(f"SELECT file_row_number, coalesce(body, '') FROM {scan}").to_arrow_reader(
            _NEEDLE_BATCH_ROWS)
        blocks, rows = needle_index.build(batches, groups, layout.row_group_size, key_hex)
        return NeedleFilter(salt, blocks, rows)

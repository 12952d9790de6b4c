"""The trace index: which files, and which row groups in them, hold a trace.

DuckDB's Parquet bloom filters are not written in encrypted files, and a
trace id is too high-cardinality for min/max statistics to prune on. So every
file written records, in the catalog and in the same transaction as the file's
entry, one row per distinct trace: a 60-bit key of the trace id, the first row
group holding it and a bit mask of the row groups holding it from there on
(``WINDOW`` of them; a trace spread wider reads its file whole). The mask is
relative to the first group, so a file may have any number of row groups: a
trace's lines sit within its hour's rows, a few row groups apart. Compaction
drops the inputs' rows and adds the outputs' in the swap, so the index follows
the data across tiers.

A key is the first 60 bits of the MD5 of the trace id, computed by DuckDB
while indexing (``key_sql``) and by Python while looking up (``trace_key``): a
collision costs an extra file opened, never a wrong answer, because the query
still filters on the trace id itself.
"""

from __future__ import annotations

import hashlib

ANY = -1          # mask of a trace spread over more row groups than WINDOW: read the file whole
WINDOW = 63       # bits 0..62 keep a mask a positive SQLite integer


def trace_key(trace_id: str) -> int:
    return int(hashlib.md5(trace_id.encode(), usedforsecurity=False).hexdigest()[:15], 16)


def key_sql(column: str) -> str:
    """``trace_key`` in DuckDB SQL."""
    return f"('0x' || substr(md5({column}), 1, 15))::BIGINT"


def entries_sql(scan: str, row_number: str, rows_per_group: int) -> str:
    """(key, first row group, mask from it) of every trace key of ``scan``, in key order: the catalog's index
    takes sorted inserts at a fraction of the cost of random ones. Hashes each (trace, row group) pair once,
    not every row: hashing is the costly part."""
    return f"""
    SELECT k, lo, CASE WHEN hi - lo < {WINDOW}
                       THEN list_aggregate(list_transform(gs, lambda g: 1::BIGINT << (g - lo)::INTEGER), 'bit_or')
                       ELSE {ANY} END
    FROM (SELECT k, min(g) AS lo, max(g) AS hi, list(g) AS gs
          FROM (SELECT DISTINCT {key_sql('trace_id')} AS k, g
                FROM (SELECT DISTINCT trace_id, {row_number} // {rows_per_group} AS g FROM {scan}
                      WHERE trace_id IS NOT NULL))
          GROUP BY k)
    ORDER BY k"""


def groups_of(first: int, mask: int, total_groups: int) -> list[int]:
    if mask == ANY:
        return list(range(total_groups))
    return [first + i for i in range(WINDOW) if mask >> i & 1 and first + i < total_groups]

"""The trace index: which files, and which row groups in them, hold a trace.

DuckDB's Parquet bloom filters are not written in encrypted files, and a
trace id is too high-cardinality for min/max statistics to prune on. So every
file written records, in the catalog and in the same transaction as the file's
entry, one row per distinct trace: a 64-bit key of the trace id and a bit mask
of the row groups holding it. Compaction drops the inputs' rows and adds the
outputs' in the swap, so the index follows the data across tiers.

A key is the first 60 bits of the MD5 of the trace id, computed by DuckDB
while indexing (``key_sql``) and by Python while looking up (``trace_key``): a
collision costs an extra file opened, never a wrong answer, because the query
still filters on the trace id itself.
"""

from __future__ import annotations

import hashlib

ANY = -1          # mask for files with more row groups than bits: read them all
MAX_GROUPS = 63   # bits 0..62 keep the mask a positive SQLite integer


def trace_key(trace_id: str) -> int:
    return int(hashlib.md5(trace_id.encode(), usedforsecurity=False).hexdigest()[:15], 16)


def key_sql(column: str) -> str:
    """``trace_key`` in DuckDB SQL."""
    return f"('0x' || substr(md5({column}), 1, 15))::BIGINT"


def mask_sql(row_number: str, rows_per_group: int, total_groups: int) -> str:
    """Aggregate: the row-group mask of the rows in a group (``ANY`` when groups outnumber the bits)."""
    if total_groups > MAX_GROUPS:
        return f"{ANY}::BIGINT"
    return f"bit_or(1::BIGINT << ({row_number} // {rows_per_group})::INTEGER)"


def groups_of(mask: int, total_groups: int) -> list[int]:
    return [g for g in range(total_groups) if mask == ANY or mask >> g & 1]

"""The trace index: which files, and which row groups in them, hold a trace.

DuckDB's Parquet bloom filters are not written in encrypted files, and a
trace id is too high-cardinality for min/max statistics to prune on. So every
file written records, in the catalog and in the same transaction as the file's
entry, one row per distinct trace: a 64-bit key of the trace id and a bit mask
of the row groups holding it. Compaction drops the inputs' rows and adds the
outputs' in the swap, so the index follows the data across tiers.

A key is the first 8 bytes of BLAKE2b of the trace id: a collision costs an
extra file opened, never a wrong answer, because the query still filters on
the trace id itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

ANY = -1          # mask for files with more row groups than bits: read them all
MAX_GROUPS = 63   # bits 0..62 keep the mask a positive SQLite integer


def trace_key(trace_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(trace_id.encode(), digest_size=8).digest(), "big", signed=True)


def mask_of(groups: Iterable[int], total_groups: int) -> int:
    if total_groups > MAX_GROUPS:
        return ANY
    mask = 0
    for g in groups:
        mask |= 1 << g
    return mask


def groups_of(mask: int, total_groups: int) -> list[int]:
    return [g for g in range(total_groups) if mask == ANY or mask >> g & 1]

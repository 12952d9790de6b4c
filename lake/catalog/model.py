"""What the catalog holds: stored files and the keys of their records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Tier(StrEnum):
    """Where a file is in its life: hot (one per flush), warm (per partition and hour), cold (per
    partition and day, or run of hours).
    A StrEnum, so it is stored, compared and printed as its name."""
    HOT = "hot"
    WARM = "warm"
    COLD = "cold"


TIERS = tuple(Tier)


Mark = tuple[str, str]           # (source_id, stream or ""): see aggregator.dedup


TraceEntry = tuple[int, int, int]  # (trace key, first row group, mask from it): see lake.trace_index
NeedleBlocks = tuple[int, bytes, bytes]  # (block, that block of every row group, seal): lake.needle_index


@dataclass(frozen=True)
class NeedleFilter:
    """A file's needle index (lake.needle_index): its Bloom filters, block by block."""
    salt: str                          # hex; keys the positions together with the file's data key
    blocks: int                        # blocks per row group
    rows: Sequence[NeedleBlocks]


@dataclass(frozen=True)
class FileEntry:
    path: str            # relative to its tier's storage root
    tier: Tier
    topic: str
    partition: str
    first_offset: int    # the consumed offsets whose records the file holds
    last_offset: int
    min_time: int        # ns since epoch, event time
    max_time: int
    rows: int
    bytes: int
    row_groups: int
    row_group_rows: int  # rows per row group (the last may hold fewer): group i = rows [i*n, (i+1)*n)
    sha256: str
    key_id: str
    namespaces: tuple[str, ...]
    containers: tuple[str, ...]  # namespace/pod/container
    created_at: int      # ns since epoch
    # Every data key that ever encrypted any of these records (this file's and its inputs', through
    # compaction and rewrites): what must be destroyed so that no copy of them, backups included, opens.
    key_lineage: tuple[str, ...] = ()

    @property
    def lineage(self) -> frozenset[str]:
        return frozenset((self.key_id, *self.key_lineage))


@dataclass(frozen=True)
class NewFile:
    entry: FileEntry
    traces: Sequence[TraceEntry]
    needles: NeedleFilter | None = None   # None: the file is read whole for a needle

"""Choosing the files a query must open, from the catalog alone.

A plan lists the files (and, for a trace, the row groups) that can hold
matching records; everything else is never opened.
"""

from __future__ import annotations

from dataclasses import dataclass

from aggregator import trace_index
from aggregator.catalog import Catalog, FileEntry


@dataclass(frozen=True)
class Plan:
    files: tuple[FileEntry, ...]
    row_groups: dict[str, list[int]]   # path -> row groups that can match
    total_files: int
    total_row_groups: int

    def describe(self) -> str:
        chosen = sum(len(g) for g in self.row_groups.values())
        return (f"{len(self.files)} of {self.total_files} files, {chosen} of {self.total_row_groups} row groups")


def trace(catalog: Catalog, trace_id: str) -> Plan:
    hits = catalog.trace_files(trace_index.trace_key(trace_id))
    total_files, total_groups = catalog.totals()
    return Plan(files=tuple(f for f, _ in hits),
                row_groups={f.path: trace_index.groups_of(mask, f.row_groups) for f, mask in hits},
                total_files=total_files, total_row_groups=total_groups)

"""Choosing the files a query must open, from the catalog alone.

A plan lists the files (and, for a trace, the row groups) that can hold
matching records; every other file is never opened. Time windows prune on
each file's event-time range, selectors on its namespaces and containers, a
trace id on the trace index, a ``--grep`` needle on the needle index (which
needs the files' data keys: ``keys``). Inside the chosen files DuckDB prunes row groups
further with their min/max statistics (files are sorted by namespace, pod,
container and time).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from lake import needle_index, trace_index
from lake.catalog.base import Catalog
from lake.catalog.model import FileEntry
from lake.keys import DataKey
from query.filters import Filters
from runtime.errors import LoglakeError


@dataclass(frozen=True)
class Plan:
    files: tuple[FileEntry, ...]
    row_groups: dict[str, list[int]]   # path -> row groups that can match
    total_files: int
    total_row_groups: int
    how: str                           # what pruned: "trace index", "catalog", "none"

    def row_ranges(self) -> dict[str, list[tuple[int, int]]]:
        """For files where only some row groups can match: their row-number ranges (first, last)."""
        out = {}
        for f in self.files:
            groups = self.row_groups[f.path]
            if len(groups) == f.row_groups:
                continue
            ranges: list[tuple[int, int]] = []
            for g in groups:
                first, last = g * f.row_group_rows, (g + 1) * f.row_group_rows - 1
                if ranges and ranges[-1][1] + 1 == first:
                    ranges[-1] = (ranges[-1][0], last)
                else:
                    ranges.append((first, last))
            out[f.path] = ranges
        return out

    def describe(self) -> str:
        chosen = sum(len(g) for g in self.row_groups.values())
        return (f"{self.how} chose {len(self.files)} of {self.total_files} files, "
                f"{chosen} of {self.total_row_groups} row groups")


def _plan(catalog: Catalog, picked: list[tuple[FileEntry, list[int]]], how: str) -> Plan:
    total_files, total_groups = catalog.totals()
    return Plan(files=tuple(f for f, _ in picked), row_groups={f.path: groups for f, groups in picked},
                total_files=total_files, total_row_groups=total_groups, how=how)


def _whole(files: list[FileEntry]) -> list[tuple[FileEntry, list[int]]]:
    return [(f, list(range(f.row_groups))) for f in files]


def _traced(catalog: Catalog, trace_id: str) -> list[tuple[FileEntry, list[int]]]:
    return [(f, trace_index.groups_of(first, mask, f.row_groups))
            for f, first, mask in catalog.trace_files(trace_index.trace_key(trace_id))]


def trace(catalog: Catalog, trace_id: str) -> Plan:
    return _plan(catalog, _traced(catalog, trace_id), "trace index")


def select(catalog: Catalog, filters: Filters, keys: Callable[[str], DataKey] | None = None) -> Plan:
    """The files (and row groups) that can hold records matching ``filters``; ``keys`` gives a data key by
    id, for the needle index (without it, a needle prunes nothing)."""
    if filters.trace_id is not None:
        hits = [(f, g) for f, g in _traced(catalog, filters.trace_id)
                if filters.may_match(f.namespaces, f.containers, f.min_time, f.max_time)]
        return _plan(catalog, hits, "trace index")
    files = catalog.files(since_ns=filters.since_ns, until_ns=filters.until_ns)
    picked = [f for f in files if filters.may_match(f.namespaces, f.containers, f.min_time, f.max_time)]
    entries = needle_index.required(filters.grep) if filters.grep is not None and not filters.regex else []
    if entries and keys is not None:
        return _needle(catalog, picked, entries, keys)
    return _plan(catalog, _whole(picked), "catalog")


def _needle(catalog: Catalog, files: list[FileEntry], entries: list[str], keys: Callable[[str], DataKey]) -> Plan:
    """Only the row groups whose needle filters may hold every entry; a file without an index (written
    before it, or whose key cannot be had: reading it will say why) or with a damaged one is read whole."""
    by_path = {f.path: f for f in files}
    keyed: dict[str, tuple[str, int]] = {}
    for path, (salt, blocks) in catalog.needle_filters(list(by_path)).items():
        try:
            keyed[path] = (needle_index.index_key(keys(by_path[path].key_id), salt), blocks)
        except LoglakeError:
            continue
    wanted = sorted({(path, needle_index.position(key, e, blocks)[0]) for path, (key, blocks) in keyed.items()
                     for e in entries})
    rows: dict[str, dict[int, tuple[bytes, bytes]]] = defaultdict(dict)
    for (path, block), sealed in catalog.needle_blocks(wanted).items():
        rows[path][block] = sealed
    picked: list[tuple[FileEntry, list[int]]] = []
    for f in files:
        groups = None
        if f.path in keyed:
            key, blocks = keyed[f.path]
            groups = needle_index.groups_holding(key, entries, blocks, f.row_groups, rows[f.path])
        if groups is None:   # no index, or one that cannot be trusted
            picked.extend(_whole([f]))
        elif groups:
            picked.append((f, groups))
    return _plan(catalog, picked, "needle index")


def everything(catalog: Catalog) -> Plan:
    return _plan(catalog, _whole(catalog.files()), "none")

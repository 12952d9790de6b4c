"""Dropping records the shipper sent twice (same record id).

A resend happens after a shipper restart or an outage: it repeats records of a
source that are already stored, in the same order, into the same partition.
Within one stream of one source the shipper emits records in offset order, and
a partition sees a source's batches in the order they were sent (the idempotent
producer keeps one batch per partition in flight). So per (partition, source,
stream) the largest stored offset, the high-water mark, tells a new record from
a resent one: a record at or below it was stored before.

Marks are kept per partition on purpose: if the topic's partition count
changes, a container's records may move to another partition and arrive out of
order across the two; separate marks then let a duplicate through rather than
drop a new record. Marks are committed in the same catalog transaction as the
file that holds the records, so a restart sees exactly the marks of what is stored.

A mark is only as good as the records that set it: aggregator.validate keeps
out batches no shipper could send before they get here. A mark beyond any
record a shipper can send (schemas.record.MAX_SOURCE_OFFSET), left by a
forged batch consumed before that check existed, is not used (warned about at
start): it would drop every later record of its source. Without it a resend of
that source may be stored twice (``verify`` names such duplicates), which is
the side dedup errs on.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from lake.catalog.model import Mark
from schemas.record import MAX_SOURCE_OFFSET

log = logging.getLogger("loglake.aggregator")


def _plausible(marks: dict[str, dict[Mark, int]]) -> dict[str, dict[Mark, int]]:
    out: dict[str, dict[Mark, int]] = {}
    for partition, by_mark in marks.items():
        out[partition] = {}
        for mark, offset in by_mark.items():
            if offset < MAX_SOURCE_OFFSET:
                out[partition][mark] = offset
            else:
                log.warning("dedup mark beyond any source offset ignored (left by a forged batch); resent "
                            "records of this source may be stored twice",
                            extra={"partition": partition, "source_id": mark[0], "stream": mark[1],
                                   "offset": offset})
    return out


class Dedup:
    def __init__(self, marks: dict[str, dict[Mark, int]]) -> None:
        self._marks = _plausible(marks)          # partition -> mark -> max stored offset
        self._changed: dict[str, set[Mark]] = {}  # moved since the partition's last commit
        self.dropped = 0

    def marks(self, partition: str) -> dict[Mark, int]:
        return self._marks.setdefault(partition, {})

    def take_changed(self, partition: str) -> dict[Mark, int]:
        """Marks moved since the last call, to commit with the partition's next file."""
        marks = self.marks(partition)
        return {m: marks[m] for m in self._changed.pop(partition, ())}

    def filter(self, partition: str, table: pa.Table) -> pa.Table:
        """Rows not stored before; the marks move past the rows kept."""
        if table.num_rows == 0:
            return table
        marks = self.marks(partition)
        streams = pc.fill_null(table.column("stream"), "")
        groups = pa.Table.from_arrays([table.column("source_id"), streams, table.column("source_offset")],
                                      names=["s", "t", "o"]).group_by(["s", "t"]).aggregate([("o", "min"), ("o", "max")])
        drop = None
        for sid, stream, lo, hi in zip(*(groups.column(c).to_pylist() for c in ("s", "t", "o_min", "o_max"))):
            mark = marks.get((sid, stream), -1)
            if lo <= mark:  # some rows of this group were stored before
                old = pc.and_(pc.and_(pc.equal(table.column("source_id"), sid), pc.equal(streams, stream)),
                              pc.less_equal(table.column("source_offset"), mark))
                drop = old if drop is None else pc.or_(drop, old)
            if hi > mark:
                marks[(sid, stream)] = hi
                self._changed.setdefault(partition, set()).add((sid, stream))
        if drop is None:
            return table
        kept = table.filter(pc.invert(drop))
        self.dropped += table.num_rows - kept.num_rows
        return kept

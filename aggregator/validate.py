"""Is a decoded batch one a shipper could have sent? Checked before dedup and storage.

schemas.wire checks the structure (framing, checksum, the body against the
schema). A batch can match the schema and still be impossible, and since the
lake trusts what batches say (dedup's high-water marks, the source lengths
``verify`` works from), one such batch could do lasting harm: a record of a
victim's source at offset 2^62 moves its mark so far that every later record of
that source is dropped as a duplicate. So the aggregator checks what the
shipper guarantees (shipper/identity.py, shipper/lines/src/records.rs,
shipper/batch.py), and a batch that breaks any of it is quarantined whole
(reason ``invalid``, one sentence naming the first thing wrong), like one that
does not decode:

- every source id, of records and of positions, is one the batch's node makes:
  ``<node>:<fp>``, ``<node>:<fp>:<dev>:<ino>`` (a file that begins like
  another) or the version-1 ``<node>:<dev>:<ino>:<crc32>``, all lowercase hex;
- ``0 <= source_offset < source_end <= MAX_SOURCE_OFFSET`` (256 TiB: no log
  file is that long), and a position's offset at most the same;
- per source and stream, records follow each other in offset order without
  overlapping (a record joined from pieces spans the other stream's lines in
  between, never its own stream's);
- severity_number 0-24 (OpenTelemetry), flags only within
  schemas.record.KNOWN_FLAGS, trace_id 32 and span_id 16 lowercase hex digits
  when present, trace_flags 0-255 (W3C, one byte) when present, time and
  observed_time not before 1970 (the shipper's clock and parser give 1970-01-01
  to 2262-04-11, the range of int64 nanoseconds);
- ``resource``, when present, a JSON object (the query view reads names such
  as ``k8s.container.restart_count`` out of it: text that is not JSON would make
  every query touching them fail).

A position is *not* an upper bound of the batch's records: it is where the
shipper may resume, which stays at the start of a record still being
assembled (a partial line of one stream, an open multi-line event) while later
records of the other stream are already out, and a source's records cut over
several batches reach past the position the first of them carries.

These are the lake's rules for what it accepts, not the wire format (which a
shipper also uses to write), hence a module of the aggregator.
"""

from __future__ import annotations

import re

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from schemas import wire
from schemas.record import KNOWN_FLAGS, MAX_SEVERITY, MAX_SOURCE_OFFSET
from schemas.wire import WireError

REASON = "invalid"
MAX_TRACE_FLAGS = 255
_HEX = "[0-9a-f]+"
# What follows "<node>:" in the ids shipper/identity.py makes: source_id, distinct_id, legacy_id.
_ID_TAIL = re.compile(rf"[0-9a-f]{{16}}(?::{_HEX}:{_HEX})?|{_HEX}:{_HEX}:[0-9a-f]{{8}}")
_TRACE_ID = "^[0-9a-f]{32}$"
_SPAN_ID = "^[0-9a-f]{16}$"


def _invalid(what: str) -> WireError:
    return WireError(REASON, f"batch is not one a shipper sends: {what}")


def foreign_source(node: str, source_id: str) -> bool:
    """Is ``source_id`` not an id the shipper of ``node`` makes?"""
    prefix = node + ":"
    return not (source_id.startswith(prefix) and _ID_TAIL.fullmatch(source_id, len(prefix)))


def _first(table: pa.Table, mask: pa.ChunkedArray | pa.Array) -> dict:
    return table.filter(mask).slice(0, 1).to_pylist()[0]


def _where(row: dict) -> str:
    return f"record of {row['source_id']!r} at byte {row['source_offset']}"


def check(batch: wire.Batch, table: pa.Table, extents: list[wire.Extent]) -> None:
    """Raise WireError('invalid') unless ``table`` (wire.to_table(batch), WIRE_SCHEMA) and ``extents``
    (wire.extents(batch)) are what the shipper of ``batch.node`` can send."""
    node = batch.node
    for sid in pc.unique(table.column("source_id")).to_pylist():
        if foreign_source(node, sid):
            raise _invalid(f"it holds records of source {sid!r}, which node {node!r} does not ship")
    for e in extents:
        if foreign_source(node, e.source_id):
            raise _invalid(f"it reports a position of source {e.source_id!r}, which node {node!r} does not ship")
    if table.num_rows:
        offset, end = table.column("source_offset"), table.column("source_end")
        bad = pc.or_(pc.or_(pc.less(offset, 0), pc.greater_equal(offset, end)), pc.greater(end, MAX_SOURCE_OFFSET))
        if pc.any(bad).as_py():
            row = _first(table, bad)
            raise _invalid(f"a {_where(row)} ends at byte {row['source_end']}; a record spans bytes "
                           f"[offset, end) with 0 <= offset < end <= {MAX_SOURCE_OFFSET}")
    for e in extents:
        if e.length > MAX_SOURCE_OFFSET:
            raise _invalid(f"it reports source {e.source_id!r} {e.length} bytes long, beyond any log file "
                           f"({MAX_SOURCE_OFFSET})")
    if table.num_rows == 0:
        return
    _check_order(table)
    severity = table.column("severity_number")
    bad = pc.or_(pc.less(severity, 0), pc.greater(severity, MAX_SEVERITY))
    if pc.any(bad).as_py():
        row = _first(table, bad)
        raise _invalid(f"a {_where(row)} has severity_number {row['severity_number']}, outside 0-{MAX_SEVERITY}")
    bad = pc.not_equal(pc.bit_wise_and(table.column("flags"), pa.scalar(~KNOWN_FLAGS, pa.int32())), 0)
    if pc.any(bad).as_py():
        row = _first(table, bad)
        raise _invalid(f"a {_where(row)} has flags {row['flags']:#x}, with bits outside the known {KNOWN_FLAGS:#x}")
    for name, pattern, what in (("trace_id", _TRACE_ID, "32"), ("span_id", _SPAN_ID, "16")):
        column = table.column(name)
        if column.null_count == len(column):
            continue
        bad = pc.invert(pc.fill_null(pc.match_substring_regex(column, pattern), True))
        if pc.any(bad).as_py():
            row = _first(table, bad)
            raise _invalid(f"a {_where(row)} has {name} {str(row[name])[:80]!r}, not {what} lowercase hex digits")
    for name in ("time", "observed_time"):
        bad = pc.less(table.column(name), 0)
        if pc.any(bad).as_py():
            row = _first(table, bad)
            raise _invalid(f"a {_where(row)} has {name} {row[name]} ns, before 1970")
    flags = table.column("trace_flags")
    if flags.null_count < len(flags):
        bad = pc.fill_null(pc.or_(pc.less(flags, 0), pc.greater(flags, MAX_TRACE_FLAGS)), False)
        if pc.any(bad).as_py():
            row = _first(table, bad)
            raise _invalid(f"a {_where(row)} has trace_flags {row['trace_flags']}, outside 0-{MAX_TRACE_FLAGS}")
    _check_resource(table)


def _check_resource(table: pa.Table) -> None:
    """Each distinct resource (a file's records share one) is a JSON object."""
    column = table.column("resource")
    if column.null_count == len(column):
        return
    for value in pc.unique(column.drop_null()).to_pylist():
        try:
            ok = isinstance(orjson.loads(value), dict)
        except orjson.JSONDecodeError:
            ok = False
        if not ok:
            row = _first(table, pc.equal(column, value))
            raise _invalid(f"a {_where(row)} has resource {value[:80]!r}, not a JSON object")


def _codes(column: pa.Array) -> tuple[pa.Array, int]:
    """Each value's number among the distinct values, and how many there are."""
    encoded = pc.dictionary_encode(column)
    return encoded.indices.cast(pa.int64()), len(encoded.dictionary)


def _check_order(table: pa.Table) -> None:
    """Per (source, stream), each record starts at or after the end of the one before it in the batch."""
    if table.num_rows < 2:
        return
    source, _ = _codes(table.column("source_id").combine_chunks())
    stream, streams = _codes(pc.fill_null(table.column("stream"), "").combine_chunks())
    group = pc.add(pc.multiply(source, max(streams, 1)), stream)
    # sort_indices is stable: within a group the batch's own order is kept
    order = pc.sort_indices(group)
    g, o, e = (pc.take(c, order) for c in (group, table.column("source_offset"), table.column("source_end")))
    n = len(g)
    same = pc.equal(g.slice(1), g.slice(0, n - 1))
    bad = pc.and_(same, pc.less(o.slice(1), e.slice(0, n - 1)))
    if pc.any(bad).as_py():
        i = pc.index(bad, True).as_py()
        row = table.slice(pc.take(order, [i + 1])[0].as_py(), 1).to_pylist()[0]
        prev = (o[i].as_py(), e[i].as_py())
        stream_name = f" ({row['stream']})" if row["stream"] else ""
        raise _invalid(f"a record of {row['source_id']!r}{stream_name} at byte {row['source_offset']} comes after "
                       f"one spanning bytes [{prev[0]}, {prev[1]}): a source's records of one stream are in offset "
                       "order and do not overlap")

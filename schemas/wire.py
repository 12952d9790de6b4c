"""Wire format of one shipped batch: the same bytes on Kafka and in the spool.

    offset  size  field
    0       4     magic          b"LLKB"
    4       1     version        3 (2 is read too)
    5       1     flags          0 (reserved)
    6       2     node_len       length of the node name in bytes (big-endian, as every integer here)
    8       4     record_count   number of records in the body
    12      4     body_len       length of the compressed body in bytes
    16      4     checksum       CRC-32 of bytes 0..15, the node name and the body
    20      n     node           UTF-8 name of the shipping node
    20+n    b     body           zstd frame (content size set) of newline-delimited JSON:

The body's first line says where the records come from; the record lines follow,
one JSON object each, with the fields of schemas.record.WIRE_SCHEMA except the node
and the SOURCE_FIELDS, which are the same for all records of one file and travel
once here instead of in every record. A record line may leave out a field at its
default (WIRE_DEFAULTS): flags and severity_number 0, observed_time equal to time;
and a SOURCE_DEFAULT_FIELDS field (``resource``) the source gives, which is then
the source's.

    {"sources": [{"namespace": "shop", "pod": "cart-1", …, "source_id": "…", "source_path": "…",
                  "resource": "{\"k8s.container.restart_count\":1}"}, …],
     "runs": [[0, 812], [1, 40]],       # 812 records of source 0, then 40 of source 1
     "positions": [[0, 1048576, 0], [1, 9120, 1]]}

``positions`` (optional) tells how far the shipper has read each source once
this batch is in: every byte below the offset is in this batch's records or an
earlier batch's, and the third value is 1 once the source is finished
(sealed: its file was closed). The lake keeps the largest, so ``verify`` can
name a tail that never arrived. A batch may hold no records and only
positions (a report).

Version 3 added ``trace_flags`` and ``resource`` (records, and ``resource`` in
sources). A version-2 batch (an older shipper's) is a version-3 batch without
them and is read as such: they are null. A version-2 reader refuses version 3
as ``unknown_version`` (quarantined whole, never half-read): upgrade the
aggregators before the shippers.

Decoding checks, in order: magic, version, lengths (truncation), checksum, then
decompression and the body's schema. Each failure raises WireError with a
``reason`` and one sentence. The body is bounded (MAX_BODY_BYTES) so a corrupt
or hostile frame cannot make a reader allocate without limit.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import zstandard

from schemas.record import SOURCE_DEFAULT_FIELDS, SOURCE_FIELDS, WIRE_SCHEMA

MAGIC = b"LLKB"
VERSION = 3
READ_VERSIONS = (2, 3)
_HEADER = struct.Struct(">4sBBHIII")
HEADER_SIZE = _HEADER.size
MAX_BODY_BYTES = 256 * 1024 * 1024
DEFAULT_ZSTD_LEVEL = 3
_PER_BATCH = {"node", *SOURCE_FIELDS}
# Record lines are parsed with every field nullable so a missing required field can be named.
_PARSE_SCHEMA = pa.schema([f.with_nullable(True) for f in WIRE_SCHEMA if f.name not in _PER_BATCH])
_REQUIRED_SOURCE_FIELDS = {f.name for f in WIRE_SCHEMA if f.name in SOURCE_FIELDS and not f.nullable}
_SOURCE_KEYS = (*SOURCE_FIELDS, *SOURCE_DEFAULT_FIELDS)
# Value of a record-line field that is left out: a constant, or the name of the field it equals.
WIRE_DEFAULTS: dict[str, int | str] = {"flags": 0, "severity_number": 0, "observed_time": "time"}


class WireError(ValueError):
    """A batch failed to decode. ``reason`` is a short machine-readable kind
    (bad_magic, unknown_version, bad_checksum, truncated, bad_body, schema) used
    for quarantine file names and metric labels."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive records of one source file."""

    source: bytes   # JSON object of the file's SOURCE_FIELDS (and SOURCE_DEFAULT_FIELDS)
    records: bytes  # JSON objects, each followed by a newline
    count: int


@dataclass(frozen=True)
class Batch:
    node: str
    record_count: int
    body: bytes  # decompressed NDJSON


@dataclass(frozen=True, slots=True)
class Extent:
    """How long a source is known to be, from a batch's positions."""
    source_id: str
    path: str
    length: int
    sealed: bool


def _checksum(prefix: bytes, node: bytes, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(node, zlib.crc32(prefix)))


def encode(node: str, runs: list[Run], *, level: int = DEFAULT_ZSTD_LEVEL,
           positions: Sequence[tuple[bytes, int, bool]] = ()) -> bytes:
    """Frame ``runs`` of records as one batch, with the ``positions`` (source, offset, sealed) reached."""
    index: dict[bytes, int] = {}
    spans: list[list[int]] = []
    for run in runs:
        i = index.setdefault(run.source, len(index))
        if spans and spans[-1][0] == i:
            spans[-1][1] += run.count
        else:
            spans.append([i, run.count])
    reached = [[index.setdefault(source, len(index)), offset, int(sealed)] for source, offset, sealed in positions]
    head = (b'{"sources":[' + b",".join(index) + b'],"runs":' + orjson.dumps(spans)
            + (b',"positions":' + orjson.dumps(reached) if reached else b"") + b"}\n")
    body = b"".join([head, *(run.records for run in runs)])
    compressed = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(body)
    node_b = node.encode()
    count = sum(run.count for run in runs)
    prefix = _HEADER.pack(MAGIC, VERSION, 0, len(node_b), count, len(compressed), 0)[:16]
    crc = _checksum(prefix, node_b, compressed)
    return prefix + struct.pack(">I", crc) + node_b + compressed


def decode(data: bytes) -> Batch:
    if len(data) < 4 or data[:4] != MAGIC:
        raise WireError("bad_magic", f"not a loglake batch: expected magic {MAGIC!r}, found {bytes(data[:4])!r}")
    if len(data) < HEADER_SIZE:
        raise WireError("truncated", f"batch truncated: {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, version, _flags, node_len, count, body_len, crc = _HEADER.unpack_from(data)
    if version not in READ_VERSIONS:
        raise WireError("unknown_version", f"unknown batch version {version}; this build reads versions "
                                           f"{', '.join(map(str, READ_VERSIONS))}, upgrade the reader")
    end = HEADER_SIZE + node_len + body_len
    if len(data) < end:
        raise WireError("truncated", f"batch truncated: header announces {end} bytes, only {len(data)} present")
    node_b = bytes(data[HEADER_SIZE:HEADER_SIZE + node_len])
    compressed = bytes(data[HEADER_SIZE + node_len:end])
    if _checksum(bytes(data[:16]), node_b, compressed) != crc:
        raise WireError("bad_checksum", "batch checksum mismatch: the bytes were altered or corrupted in transit")
    try:
        body = zstandard.ZstdDecompressor().decompress(compressed, max_output_size=MAX_BODY_BYTES)
    except zstandard.ZstdError as e:
        raise WireError("bad_body", f"batch body is not a valid zstd frame ({e})") from None
    try:
        node = node_b.decode()
    except UnicodeDecodeError:
        raise WireError("bad_body", "batch node name is not UTF-8") from None
    return Batch(node=node, record_count=count, body=body)


def _schema_error(what: str) -> WireError:
    return WireError("schema", f"batch body does not match the record schema: {what}")


_HEAD_FIELDS = {"sources", "runs", "positions"}


def _sources(head: bytes, record_count: int) -> tuple[list[dict], list[tuple[int, int]], list[tuple[int, int, bool]]]:
    """The body's first line: the sources, the runs of records and the positions, checked."""
    try:
        value = orjson.loads(head)
        sources, runs = value["sources"], [(int(i), int(n)) for i, n in value["runs"]]
        positions = [(int(i), int(o), bool(s)) for i, o, s in value.get("positions", ())]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise _schema_error("the first line is not a sources-and-runs object") from None
    if not set(value) <= _HEAD_FIELDS or not {"sources", "runs"} <= set(value):
        raise _schema_error(f"unknown batch header field(s) {sorted(set(value) - _HEAD_FIELDS)}")
    for src in sources:
        if not isinstance(src, dict) or not set(src) <= set(_SOURCE_KEYS):
            raise _schema_error(f"a source with fields outside {', '.join(_SOURCE_KEYS)}")
        if any(v is not None and not isinstance(v, str) for v in src.values()):
            raise _schema_error("a source field that is not a string")
        missing = _REQUIRED_SOURCE_FIELDS - {k for k, v in src.items() if v is not None}
        if missing:
            raise WireError("schema", f"batch body has records without the required field {sorted(missing)[0]!r}")
    if any(not 0 <= i < len(sources) or n < 1 for i, n in runs):
        raise _schema_error("a run names an unknown source or holds no records")
    if any(not 0 <= i < len(sources) or o < 0 for i, o, _ in positions):
        raise _schema_error("a position names an unknown source or a negative offset")
    if sum(n for _, n in runs) != record_count:
        raise WireError("schema", f"batch header announces {record_count} records, "
                                  f"its runs hold {sum(n for _, n in runs)}")
    # Every record of a run gets its source's fields: a small forged header (a huge field, many records)
    # must not make the reader allocate without limit, any more than a huge body may.
    sizes = [sum(len(v) for v in src.values() if v is not None) for src in sources]
    expanded = sum(sizes[i] * n for i, n in runs)
    if expanded > MAX_BODY_BYTES:
        raise WireError("schema", f"batch sources would expand to {expanded} bytes over its records "
                                  f"(at most {MAX_BODY_BYTES})")
    return sources, runs, positions


def _head(batch: Batch) -> bytes:
    nl = batch.body.find(b"\n")
    return batch.body[:nl] if nl >= 0 else batch.body


def extents(batch: Batch) -> list[Extent]:
    """The source lengths a batch reports (its ``positions``); WireError if its header is invalid."""
    sources, _, positions = _sources(_head(batch), batch.record_count)
    return [Extent(sources[i]["source_id"], sources[i]["source_path"], offset, sealed)
            for i, offset, sealed in positions]


def _repeated(values: list[str | None], runs: list[tuple[int, int]]) -> pa.Array:
    parts = [pa.repeat(pa.scalar(values[i], pa.string()), n) for i, n in runs]
    return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)


def to_table(batch: Batch) -> pa.Table:
    """Parse the batch body into a WIRE_SCHEMA table; any field outside the schema,
    a missing required field or a wrong type is a WireError('schema')."""
    if batch.record_count == 0:
        return WIRE_SCHEMA.empty_table()
    nl = batch.body.find(b"\n")
    sources, runs, _ = _sources(batch.body[:max(nl, 0)], batch.record_count)
    lines = pa.py_buffer(batch.body)[nl + 1:]
    try:
        table = pa_json.read_json(
            pa.BufferReader(lines),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=max(1 << 20, lines.size + 1)),
            parse_options=pa_json.ParseOptions(explicit_schema=_PARSE_SCHEMA, unexpected_field_behavior="error"))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise _schema_error(str(e)) from None
    if table.num_rows != batch.record_count:
        raise WireError("schema", f"batch header announces {batch.record_count} records, body holds {table.num_rows}")
    columns = []
    for field in WIRE_SCHEMA:
        if field.name == "node":
            column = pa.repeat(pa.scalar(batch.node, pa.string()), table.num_rows)
        elif field.name in SOURCE_FIELDS:
            column = _repeated([s.get(field.name) for s in sources], runs)
        else:
            column = table.column(field.name)
            default = WIRE_DEFAULTS.get(field.name)
            if column.null_count and default is not None:
                column = pc.coalesce(column, table.column(default) if isinstance(default, str) else default)
            if field.name in SOURCE_DEFAULT_FIELDS and column.null_count and any(field.name in s for s in sources):
                column = pc.coalesce(column, _repeated([s.get(field.name) for s in sources], runs))
            if not field.nullable and column.null_count:
                raise WireError("schema", f"batch body has records without the required field {field.name!r}")
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=WIRE_SCHEMA)

"""Wire format of one shipped batch: the same bytes on Kafka and in the spool.

    offset  size  field
    0       4     magic          b"LLKB"
    4       1     version        1
    5       1     flags          0 (reserved)
    6       2     node_len       length of the node name in bytes (big-endian, as every integer here)
    8       4     record_count   number of records in the body
    12      4     body_len       length of the compressed body in bytes
    16      4     checksum       CRC-32 of bytes 0..15, the node name and the body
    20      n     node           UTF-8 name of the shipping node
    20+n    b     body           zstd frame (content size set) of newline-delimited JSON,
                                 one object per record with the fields of schemas.record.WIRE_SCHEMA

Decoding checks, in order: magic, version, lengths (truncation), checksum, then
decompression and the body's schema. Each failure raises WireError with a
``reason`` and one sentence. The body is bounded (MAX_BODY_BYTES) so a corrupt
or hostile frame cannot make a reader allocate without limit.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.json as pa_json
import zstandard

from schemas.errors import WireError
from schemas.record import WIRE_SCHEMA

MAGIC = b"LLKB"
VERSION = 1
_HEADER = struct.Struct(">4sBBHIII")
HEADER_SIZE = _HEADER.size
MAX_BODY_BYTES = 256 * 1024 * 1024
DEFAULT_ZSTD_LEVEL = 3
# Parsed with every field nullable so a missing required field can be named.
_PARSE_SCHEMA = pa.schema([f.with_nullable(True) for f in WIRE_SCHEMA])


@dataclass(frozen=True)
class Batch:
    node: str
    record_count: int
    body: bytes  # decompressed NDJSON


def _checksum(prefix: bytes, node: bytes, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(node, zlib.crc32(prefix)))


def encode(node: str, lines: list[bytes], *, level: int = DEFAULT_ZSTD_LEVEL) -> bytes:
    """Frame ``lines`` (one JSON object each, no newline) as one batch."""
    compressed = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(b"\n".join(lines))
    node_b = node.encode()
    prefix = _HEADER.pack(MAGIC, VERSION, 0, len(node_b), len(lines), len(compressed), 0)[:16]
    crc = _checksum(prefix, node_b, compressed)
    return prefix + struct.pack(">I", crc) + node_b + compressed


def decode(data: bytes) -> Batch:
    if len(data) < 4 or data[:4] != MAGIC:
        raise WireError("bad_magic", f"not a loglake batch: expected magic {MAGIC!r}, found {bytes(data[:4])!r}")
    if len(data) < HEADER_SIZE:
        raise WireError("truncated", f"batch truncated: {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, version, _flags, node_len, count, body_len, crc = _HEADER.unpack_from(data)
    if version != VERSION:
        raise WireError("unknown_version", f"unknown batch version {version}; this build reads version {VERSION}, upgrade the reader")
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


def to_table(batch: Batch) -> pa.Table:
    """Parse the batch body into a WIRE_SCHEMA table; any field outside the schema,
    a missing required field or a wrong type is a WireError('schema')."""
    if batch.record_count == 0:
        return WIRE_SCHEMA.empty_table()
    try:
        table = pa_json.read_json(
            io.BytesIO(batch.body),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=max(1 << 20, len(batch.body) + 1)),
            parse_options=pa_json.ParseOptions(explicit_schema=_PARSE_SCHEMA, unexpected_field_behavior="error"))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise WireError("schema", f"batch body does not match the record schema: {e}") from None
    if table.num_rows != batch.record_count:
        raise WireError("schema", f"batch header announces {batch.record_count} records, body holds {table.num_rows}")
    table = table.select(list(WIRE_SCHEMA.names))
    for field in WIRE_SCHEMA:
        if not field.nullable and table.column(field.name).null_count:
            raise WireError("schema", f"batch body has records without the required field {field.name!r}")
    return table.cast(WIRE_SCHEMA)

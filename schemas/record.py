"""The canonical log record: one definition, used by the shipper, the aggregator and query.

The fields follow the OpenTelemetry log data model (Timestamp, ObservedTimestamp,
SeverityText, SeverityNumber, Body, TraceId, SpanId, TraceFlags, Attributes,
Resource), with the Kubernetes resource fields as columns of their own and the
record's provenance:

    field            type               meaning
    time             timestamp[ns]      when the event happened, UTC (from the line when it says, else the runtime's)
    observed_time    timestamp[ns]      when the container runtime wrote the line (CRI / Docker timestamp), UTC
    severity_text    string             level as written by the application (e.g. "warn"), null if none
    severity_number  int32              OpenTelemetry severity number (1..24), 0 when unknown
    body             string             the message (for JSON lines, the message field)
    trace_id         string             32 lowercase hex digits, null if none
    span_id          string             16 lowercase hex digits, null if none
    trace_flags      int32              W3C trace flags 0..255 (bit 0: sampled), null if the line gave none
    attributes       string             JSON object of the remaining structured fields, null if none
    resource         string             JSON object of OpenTelemetry resource attributes not in the columns
                                        below (k8s.container.restart_count, container.name,
                                        container.label.<name>, an OTel line's own resource), null if none
    node             string             node the shipper runs on
    namespace        string             Kubernetes namespace
    pod              string             pod name
    pod_uid          string             pod UID
    container        string             container name
    container_id     string             runtime container id, when the path tells it
    stream           string             stdout | stderr
    source_id        string             identity of the source file: node, device, inode, first-line checksum
    source_path      string             path the file was read from
    source_offset    int64              byte offset of the record's first line in the source file
    source_end       int64              offset just past the record's last line (for completeness checks)
    flags            int32              bit set of FLAG_* below

``trace_flags`` and ``resource`` were added after the first lakes were written:
files written before them lack the two columns, and every reader
(lake.duck.scan_sql) gives them as null there.

A record's stable unique id is the pair (source_id, source_offset): the same bytes
read twice (a resend after a crash) give the same id, so duplicates can be
dropped. ``record_id`` spells it as one string.

On the wire the two timestamps travel as integer nanoseconds since the epoch
(``WIRE_SCHEMA``); storage and query use ``LOG_SCHEMA``. Timestamps are stored
without a zone attribute because DuckDB keeps nanoseconds only in TIMESTAMP_NS
(its TIMESTAMPTZ is microseconds); they are UTC, and query connections run
with TimeZone=UTC so comparisons with now() are exact.
"""

from __future__ import annotations

import pyarrow as pa

# Record flags: set by the shipper, never cleared.
FLAG_TRUNCATED = 1 << 0      # longer than the maximum record size; the rest was cut
FLAG_INVALID_UTF8 = 1 << 1   # bytes that were not UTF-8 were replaced with U+FFFD
FLAG_PARTIAL = 1 << 2        # a partial line whose end never came (file rotated or removed)
FLAG_BAD_PREFIX = 1 << 3     # the runtime prefix (CRI / Docker) was malformed; kept as plain text
FLAG_NON_OBJECT_JSON = 1 << 4  # JSON that was not an object; kept as the body
FLAG_REDACTED = 1 << 5       # at least one redaction rule matched
FLAG_TIME_CLAIMED = 1 << 6   # the line claimed a time outside the allowed window around the runtime's;
                             # ``time`` is the runtime's and the claim is kept in attributes (_claimed_time)
KNOWN_FLAGS = (1 << 7) - 1   # a record with any other bit set is not from this format
CLAIMED_TIME_ATTRIBUTE = "_claimed_time"
# No source offset reaches this (256 TiB: no log file is that long); the lake refuses records past it.
MAX_SOURCE_OFFSET = 1 << 48

# OpenTelemetry SeverityNumber: the first number of each range.
SEVERITY_NUMBERS: dict[str, int] = {
    "TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21,
}
MAX_SEVERITY = 24
# level name (lower case, as selectors and the CLI spell it) -> its severity_number range, both ends in
SEVERITY_RANGES: dict[str, tuple[int, int]] = {
    name.lower(): (first, first + 3) for name, first in SEVERITY_NUMBERS.items()}

# Times are nanoseconds since the Unix epoch (UTC).
SECOND_NS = 1_000_000_000
HOUR_NS = 3600 * SECOND_NS
DAY_NS = 24 * HOUR_NS

_TS = pa.timestamp("ns")

# (name, storage type, nullable)
_FIELDS: tuple[tuple[str, pa.DataType, bool], ...] = (
    ("time", _TS, False),
    ("observed_time", _TS, False),
    ("severity_text", pa.string(), True),
    ("severity_number", pa.int32(), False),
    ("body", pa.string(), False),
    ("trace_id", pa.string(), True),
    ("span_id", pa.string(), True),
    ("trace_flags", pa.int32(), True),
    ("attributes", pa.string(), True),
    ("resource", pa.string(), True),
    ("node", pa.string(), False),
    ("namespace", pa.string(), True),
    ("pod", pa.string(), True),
    ("pod_uid", pa.string(), True),
    ("container", pa.string(), True),
    ("container_id", pa.string(), True),
    ("stream", pa.string(), True),
    ("source_id", pa.string(), False),
    ("source_path", pa.string(), False),
    ("source_offset", pa.int64(), False),
    ("source_end", pa.int64(), False),
    ("flags", pa.int32(), False),
)

FIELD_NAMES: tuple[str, ...] = tuple(name for name, _, _ in _FIELDS)
# The same for every record of one source file: on the wire they travel once per batch
# and source, and the node once per batch (schemas.wire), not in every record.
SOURCE_FIELDS: tuple[str, ...] = ("namespace", "pod", "pod_uid", "container", "container_id", "source_id",
                                  "source_path")
# The same for most records of a file, so also sent once per source, but a record may carry its own
# (an OpenTelemetry line's resource, merged with the file's): a record's own value wins.
SOURCE_DEFAULT_FIELDS: tuple[str, ...] = ("resource",)
# The columns every file has, including those written before trace_flags and resource existed.
FIRST_FIELD_NAMES: tuple[str, ...] = tuple(n for n in FIELD_NAMES if n not in ("trace_flags", "resource"))
TIME_FIELDS: tuple[str, ...] = ("time", "observed_time")

LOG_SCHEMA = pa.schema([pa.field(n, t, nullable=null) for n, t, null in _FIELDS])
WIRE_SCHEMA = pa.schema([pa.field(n, pa.int64() if n in TIME_FIELDS else t, nullable=null)
                         for n, t, null in _FIELDS])

# The same id as record_id(), for SQL over stored records.
RECORD_ID_SQL = "source_id || '@' || CAST(source_offset AS VARCHAR)"


def record_id(source_id: str, source_offset: int) -> str:
    return f"{source_id}@{source_offset}"


def from_wire(table: pa.Table) -> pa.Table:
    """Turn a table decoded with WIRE_SCHEMA into LOG_SCHEMA (integer ns → timestamps)."""
    columns = [table.column(n).cast(_TS) if n in TIME_FIELDS else table.column(n) for n in FIELD_NAMES]
    return pa.Table.from_arrays(columns, schema=LOG_SCHEMA)

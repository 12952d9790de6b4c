"""The batch wire format: round trip and each kind of damage."""

from __future__ import annotations

import struct

import orjson
import pytest

from schemas import record, wire
from schemas.wire import WireError

RECORDS = [
    {"time": 1_700_000_000_123_456_789, "observed_time": 1_700_000_000_123_456_789, "severity_number": 17,
     "severity_text": "error", "body": "payment failed: card declined", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
     "span_id": "00f067aa0ba902b7", "attributes": '{"order":42}', "node": "n1", "namespace": "shop", "pod": "pay-1",
     "container": "api", "stream": "stderr", "source_id": "n1:1:2:3", "source_path": "/x/0.log",
     "source_offset": 0, "source_end": 120, "flags": 0},
    {"time": 1_700_000_001_000_000_000, "observed_time": 1_700_000_001_000_000_000, "severity_number": 0,
     "body": "plain ünïcode line", "node": "n1", "source_id": "n1:1:2:3", "source_path": "/x/0.log",
     "source_offset": 120, "source_end": 170, "flags": record.FLAG_INVALID_UTF8},
]


def runs(records: list[dict]) -> list[wire.Run]:
    """Records as the shipper sends them: a source's own fields once per run, the node in the frame."""
    out = []
    for r in records:
        source = {k: r[k] for k in record.SOURCE_FIELDS if k in r}
        line = {k: v for k, v in r.items() if k not in source and k != "node"}
        out.append(wire.Run(orjson.dumps(source), orjson.dumps(line) + b"\n", 1))
    return out


def encoded() -> bytes:
    return wire.encode("node-1", runs(RECORDS))


def test_round_trip_keeps_every_field():
    batch = wire.decode(encoded())
    assert (batch.node, batch.record_count) == ("node-1", 2)
    table = record.from_wire(wire.to_table(batch))
    assert table.schema == record.LOG_SCHEMA
    rows = table.drop_columns(["time", "observed_time"]).to_pylist()
    assert rows[0]["body"] == "payment failed: card declined"
    assert rows[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert [(r["node"], r["namespace"], r["pod"]) for r in rows] == [("node-1", "shop", "pay-1"), ("node-1", None, None)]
    assert table.column("time").cast("int64").to_pylist() == [r["time"] for r in RECORDS]
    assert rows[1]["body"] == "plain ünïcode line"
    assert rows[1]["namespace"] is None and rows[1]["flags"] == record.FLAG_INVALID_UTF8
    assert record.record_id(rows[1]["source_id"], rows[1]["source_offset"]) == "n1:1:2:3@120"


def test_bad_magic():
    data = b"XXXX" + encoded()[4:]
    with pytest.raises(WireError, match="not a loglake batch") as e:
        wire.decode(data)
    assert e.value.reason == "bad_magic"


def test_unknown_version():
    data = bytearray(encoded())
    data[4] = 9
    with pytest.raises(WireError, match="unknown batch version 9") as e:
        wire.decode(bytes(data))
    assert e.value.reason == "unknown_version"


def test_bad_checksum():
    data = bytearray(encoded())
    data[-3] ^= 0xFF
    with pytest.raises(WireError, match="checksum mismatch") as e:
        wire.decode(bytes(data))
    assert e.value.reason == "bad_checksum"


@pytest.mark.parametrize("keep", [3, 10, wire.HEADER_SIZE + 3, -1])
def test_truncated(keep):
    data = encoded()
    cut = data[:keep] if keep > 0 else data[:-1]
    with pytest.raises(WireError) as e:
        wire.decode(cut)
    assert e.value.reason in ("truncated", "bad_magic")
    if keep > 4:
        assert e.value.reason == "truncated" and "truncated" in str(e.value)


def test_header_count_must_match_body():
    raw = encoded()
    data = bytearray(raw)
    struct.pack_into(">I", data, 8, 3)  # claim 3 records
    crc = wire._checksum(bytes(data[:16]), b"node-1", raw[wire.HEADER_SIZE + 6:])
    struct.pack_into(">I", data, 16, crc)
    with pytest.raises(WireError, match="announces 3 records, its runs hold 2") as e:
        wire.to_table(wire.decode(bytes(data)))
    assert e.value.reason == "schema"


def test_runs_must_match_the_record_lines():
    run = runs(RECORDS[:1])[0]
    with pytest.raises(WireError, match="announces 2 records, body holds 1"):
        wire.to_table(wire.decode(wire.encode("n", [wire.Run(run.source, run.records, 2)])))


def test_records_of_several_sources_keep_their_own_fields():
    other = dict(RECORDS[1], source_id="n1:9:9:9", pod="cart-2", namespace="shop")
    table = wire.to_table(wire.decode(wire.encode("n", runs([RECORDS[0], other, RECORDS[0]]))))
    assert table.column("source_id").to_pylist() == ["n1:1:2:3", "n1:9:9:9", "n1:1:2:3"]
    assert table.column("pod").to_pylist() == ["pay-1", "cart-2", "pay-1"]


@pytest.mark.parametrize("run, message", [
    (wire.Run(b'{"source_id":"s","source_path":"/p"}', b'{"body":5}\n', 1), "record schema"),
    (wire.Run(b'{"source_id":"s","source_path":"/p"}', b'{"surprise":1}\n', 1), "record schema"),
    (wire.Run(b'{"source_id":"s","source_path":"/p"}', b'{"pod":"p"}\n', 1), "record schema"),
    (wire.Run(b'{"source_id":"s","source_path":"/p","surprise":"x"}', b"{}\n", 1), "fields outside"),
    (wire.Run(b'{"source_id":"s","source_path":7}', b"{}\n", 1), "not a string"),
    (wire.Run(b"[1]", b"{}\n", 1), "fields outside"),
])
def test_schema_violation(run, message):
    with pytest.raises(WireError, match=message) as e:
        wire.to_table(wire.decode(wire.encode("n", [run])))
    assert e.value.reason == "schema"


def test_missing_required_field():
    rec = {k: v for k, v in RECORDS[1].items() if k != "source_id"}
    with pytest.raises(WireError, match="source_id"):
        wire.to_table(wire.decode(wire.encode("n", runs([rec]))))


def test_body_without_its_sources_line():
    body_only = wire.encode("n", runs(RECORDS[:1]))
    batch = wire.decode(body_only)
    broken = wire.Batch(batch.node, batch.record_count, batch.body.split(b"\n", 1)[1])
    with pytest.raises(WireError, match="sources-and-runs"):
        wire.to_table(broken)

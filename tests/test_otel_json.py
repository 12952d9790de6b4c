"""Lines in the OpenTelemetry log data model's JSON shape (OTLP/JSON and the plain form), W3C trace flags,
and the record schema's trace_flags and resource on the wire and in the lake."""

from __future__ import annotations

import struct
from collections import Counter

import orjson
import pyarrow as pa
import pytest

from aggregator import validate
from aggregator.cli.run import main as aggregator
from query.cli import main as query_cli
from schemas import record, wire
from schemas.wire import WireError
from shipper.cli import main as shipper
from tests.conftest import build_records, cri, decode_records, pod_log, write_config

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
T0 = 1795514400_000000000  # 2026-11-24T10:00:00Z, the runtime's time of the file's lines
CRI_TS = "2026-11-24T10:00:00.000000000Z"
ANY_PAST = {"event_time_max_past_s": 100 * 365 * 86400}


def one(doc: dict | str, **settings: object) -> dict:
    text = doc if isinstance(doc, str) else orjson.dumps(doc).decode()
    (rec,) = build_records([text.encode()], redact=(), **{**ANY_PAST, **settings}).records
    return rec


def attrs(rec: dict) -> dict | None:
    return orjson.loads(rec["attributes"]) if "attributes" in rec else None


# An OTLP/JSON log record (the protobuf JSON mapping: AnyValues, attribute lists, 64-bit ints as strings)
OTLP = {
    "timeUnixNano": str(T0 - 5_000_000_123), "observedTimeUnixNano": str(T0 - 4_000_000_000),
    "severityNumber": 13, "severityText": "WARN", "body": {"stringValue": "disk almost full"},
    "attributes": [{"key": "disk", "value": {"stringValue": "/dev/sda"}},
                   {"key": "free_bytes", "value": {"intValue": "1073741824"}},
                   {"key": "ratio", "value": {"doubleValue": 0.93}},
                   {"key": "alert", "value": {"boolValue": True}},
                   {"key": "mounts", "value": {"arrayValue": {"values": [{"stringValue": "/"},
                                                                          {"stringValue": "/var"}]}}},
                   {"key": "fs", "value": {"kvlistValue": {"values": [{"key": "type",
                                                                       "value": {"stringValue": "ext4"}}]}}}],
    "droppedAttributesCount": 0,
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}},
                                {"key": "service.version", "value": {"stringValue": "1.4.2"}}]},
    "traceId": TRACE.upper(), "spanId": SPAN, "flags": 1,
}
OTLP_ATTRIBUTES = {"disk": "/dev/sda", "free_bytes": 1073741824, "ratio": 0.93, "alert": True,
                   "mounts": ["/", "/var"], "fs": {"type": "ext4"}}


def test_otlp_json_record():
    r = one(OTLP)
    assert (r["time"], r["severity_number"], r["severity_text"], r["body"]) == (T0 - 5_000_000_123, 13, "WARN",
                                                                                  "disk almost full")
    assert (r["trace_id"], r["span_id"], r["trace_flags"]) == (TRACE, SPAN, 1)
    assert orjson.loads(r["resource"]) == {"service.name": "shop", "service.version": "1.4.2"}
    # the model's other fields stay, as any field does; the losing time alias too
    assert attrs(r) == {"observedTimeUnixNano": str(T0 - 4_000_000_000), "droppedAttributesCount": 0,
                        **OTLP_ATTRIBUTES}
    assert r["flags"] == 0


def test_plain_data_model_record():
    r = one({"timeUnixNano": T0 - 1, "severityNumber": 17, "severityText": "ERROR", "body": "payment failed",
             "attributes": {"order": 7, "user": {"id": 3}}, "resource": {"service.name": "pay"},
             "traceId": TRACE, "spanId": SPAN, "traceFlags": "01"})
    assert (r["time"], r["severity_number"], r["body"], r["trace_flags"]) == (T0 - 1, 17, "payment failed", 1)
    assert attrs(r) == {"order": 7, "user": {"id": 3}}
    assert orjson.loads(r["resource"]) == {"service.name": "pay"}


@pytest.mark.parametrize("number, expected", [(9, 9), ("21", 21), ("SEVERITY_NUMBER_WARN2", 14),
                                              ("SEVERITY_NUMBER_FATAL4", 24), ("SEVERITY_NUMBER_UNSPECIFIED", 17)])
def test_severity_number_is_the_records(number, expected):
    # OTel's own number wins over what its text maps to; unspecified (0) leaves the text's
    r = one({"timeUnixNano": str(T0), "severityText": "error", "severityNumber": number, "body": "x"})
    assert (r["severity_text"], r["severity_number"]) == ("error", expected)
    assert attrs(r) is None


@pytest.mark.parametrize("number", [25, -1, "loud", 13.5, "SEVERITY_NUMBER_WARN5"])
def test_severity_number_that_is_none_stays_an_attribute(number):
    r = one({"timeUnixNano": str(T0), "severityText": "warn", "severityNumber": number, "body": "x"})
    assert (r["severity_number"], attrs(r)) == (13, {"severityNumber": number})


@pytest.mark.parametrize("body, text", [
    ({"stringValue": "a \"quoted\" line\n"}, "a \"quoted\" line\n"),
    ({"intValue": "-42"}, "-42"), ({"boolValue": False}, "false"), ({"doubleValue": 2.5}, "2.5"),
    ({"kvlistValue": {"values": [{"key": "k", "value": {"intValue": 1}}]}}, '{"k":1}'),
    ({"arrayValue": {"values": [{"stringValue": "a"}, 3]}}, '["a",3]'),
    ({"plain": "object"}, '{"plain":"object"}'),        # not an AnyValue: as written
    ({"intValue": "not a number"}, '{"intValue":"not a number"}'),
])
def test_body_any_value(body, text):
    assert one({"severityNumber": 9, "body": body})["body"] == text


def test_time_unix_nano_exact_zero_and_claimed():
    assert one({"timeUnixNano": "1795514400123456789", "body": "x"})["time"] == 1795514400123456789
    # 0 is OTel's "not set": the observed time stands in, and the 0 is not kept
    r = one({"timeUnixNano": "0", "observedTimeUnixNano": "1795514400000000007", "body": "x"})
    assert r["time"] == 1795514400000000007 and attrs(r) is None
    # far from the runtime's time, or no time at all: the runtime's, the claim kept as written
    for claim in ("1", "17955144001234567890123", "soon"):
        r = one({"timeUnixNano": claim, "severityNumber": 9, "body": "x"}, event_time_max_past_s=3600)
        assert r["flags"] & record.FLAG_TIME_CLAIMED and attrs(r) == {record.CLAIMED_TIME_ATTRIBUTE: claim}


def test_otel_attribute_wins_over_a_top_level_field_and_malformed_lists_stay():
    r = one({"severityNumber": 9, "body": "x", "user": "top", "attributes": {"user": "attr", "n": 1}})
    assert attrs(r) == {"user": "attr", "n": 1}
    broken = [{"value": {"stringValue": "no key"}}]
    r = one({"severityNumber": 9, "body": "x", "attributes": broken, "resource": "not an object"})
    assert attrs(r) == {"attributes": broken, "resource": "not an object"} and "resource" not in r


def test_generic_names_are_the_models_only_in_otel_lines():
    doc = {"msg": "GET /cart", "body": "{\"items\":2}", "attributes": {"a": 1}, "resource": {"r": 1}, "flags": 3}
    r = one(doc)
    assert r["body"] == "GET /cart" and attrs(r) == {k: v for k, v in doc.items() if k != "msg"}
    assert "trace_flags" not in r and "resource" not in r
    # with no message field at all the line is its own body, as before
    doc = {"body": "x", "attributes": [1]}
    assert one(doc)["body"] == orjson.dumps(doc).decode()
    # the same names beside one only the OTel model uses are the model's
    r = one({"severityText": "info", "body": "x", "attributes": {"a": 1}, "resource": {"r": 1}, "flags": 3})
    assert (r["body"], attrs(r), orjson.loads(r["resource"]), r["trace_flags"]) == ("x", {"a": 1}, {"r": 1}, 3)


@pytest.mark.parametrize("flags, expected", [(0, 0), (1, 1), (257, 1), ("03", 3), ("ff", 255)])
def test_trace_flags(flags, expected):
    assert one({"msg": "x", "traceFlags": flags})["trace_flags"] == expected


@pytest.mark.parametrize("flags", [-1, 2**32, "1", "zz", True, 1.0])
def test_trace_flags_that_are_none_stay_attributes(flags):
    # and do not hide a lesser alias that is some
    r = one({"severityNumber": 9, "body": "x", "trace_flags": flags, "flags": 1})
    assert r["trace_flags"] == 1 and attrs(r) == {"trace_flags": flags}


def test_traceparent_flags_are_kept():
    r = one({"msg": "a", "traceparent": f"00-{TRACE}-{SPAN}-01"})
    assert (r["trace_id"], r["span_id"], r["trace_flags"], attrs(r)) == (TRACE, SPAN, 1, None)
    r = one(f"GET /x traceparent=00-{TRACE}-{SPAN}-02 200")
    assert (r["trace_id"], r["trace_flags"]) == (TRACE, 2)
    r = one(f"level=info msg=hi traceparent=00-{TRACE}-{SPAN}-03")
    assert (r["trace_id"], r["trace_flags"]) == (TRACE, 3)
    # an explicit flags field wins over the traceparent's
    assert one({"msg": "a", "traceFlags": 0, "traceparent": f"00-{TRACE}-{SPAN}-01"})["trace_flags"] == 0


def test_a_lines_resource_is_merged_with_its_files():
    from shipper.config import ShipperConfig
    from shipper.enrich import K8sMeta
    from shipper.records import RecordBuilder, processing
    from shipper.tail import Chunk

    meta = K8sMeta("shop", "web-1", None, "app", None, restart_count=2, container_name="web")
    builder = RecordBuilder(processing(ShipperConfig(node_name="n1", redact=())), source_id="s1", path="/x.log",
                            meta=meta, fmt="plain", errors=Counter(), redactions=Counter())
    lines = (orjson.dumps({"severityNumber": 9, "body": "otel", "resource": {"service.name": "shop",
                                                                            "container.name": "claimed"}})
             + b"\nplain line\n")
    records = decode_records(builder.build(Chunk(lines, 0, len(lines), False))[0])
    file_resource = {"k8s.container.restart_count": 2, "container.name": "web"}
    assert orjson.loads(orjson.loads(builder.source)["resource"]) == file_resource
    # the file's own word wins over what the line claims; a line without a resource has none of its own
    assert orjson.loads(records[0]["resource"]) == {"service.name": "shop", **file_resource}
    assert "resource" not in records[1]


def test_a_line_cannot_give_itself_names_the_shipper_owns():
    """On a file whose runtime says nothing of a name (a CRI file has no container labels), a line's
    resource still cannot set k8s.* or container.*: the view's "container.name" or a label would lie."""
    from shipper.config import ShipperConfig
    from shipper.enrich import K8sMeta
    from shipper.records import RecordBuilder, processing
    from shipper.tail import Chunk

    builder = RecordBuilder(processing(ShipperConfig(node_name="n1", redact=())), source_id="s1", path="/x.log",
                            meta=K8sMeta("shop", "web-1", None, "app", None, restart_count=0), fmt="plain",
                            errors=Counter(), redactions=Counter())
    line = (b'{"severityNumber":9,"body":"otel","resource":{"service.name":"a","container.name":"vault-db",'
            b'"container.label.team":"security","k8s.namespace.name":"kube-system","service.name":"b"}}\n')
    (rec,) = decode_records(builder.build(Chunk(line, 0, len(line), False))[0])
    assert rec["resource"] == '{"service.name":"b","k8s.container.restart_count":0}'


# The wire: trace_flags and resource, and batches of an older shipper --------------------------------

SOURCE = {"namespace": "shop", "source_id": "n1:00000000000000aa", "source_path": "/x/0.log"}


def batch_of(lines: list[dict], source: dict = SOURCE, version: int = wire.VERSION) -> wire.Batch:
    data = wire.encode("n1", [wire.Run(orjson.dumps(source), b"".join(orjson.dumps(r) + b"\n" for r in lines),
                                       len(lines))])
    if version != wire.VERSION:  # as an older shipper framed it: its version, its checksum
        data = bytearray(data)
        data[4] = version
        struct.pack_into(">I", data, 16, wire._checksum(bytes(data[:16]), data[20:22], bytes(data[22:])))
    return wire.decode(bytes(data))


def rec(offset: int, **fields: object) -> dict:
    return {"time": T0, "body": "b", "source_offset": offset, "source_end": offset + 10, **fields}


def test_wire_resource_defaults_to_the_sources_and_a_record_may_carry_its_own():
    source = {**SOURCE, "resource": '{"k8s.container.restart_count":1}'}
    table = wire.to_table(batch_of([rec(0), rec(10, resource='{"service.name":"a"}', trace_flags=1)], source))
    assert table.column("resource").to_pylist() == ['{"k8s.container.restart_count":1}', '{"service.name":"a"}']
    assert table.column("trace_flags").to_pylist() == [None, 1]
    assert record.from_wire(table).schema == record.LOG_SCHEMA


def test_wire_of_an_older_shipper_is_read():
    # version 2 (before trace_flags and resource): read, the new columns null
    batch = batch_of([rec(0, severity_number=9)], version=2)
    table = wire.to_table(batch)
    assert table.column("severity_number").to_pylist() == [9]
    assert table.column("resource").to_pylist() == [None] and table.column("trace_flags").to_pylist() == [None]
    with pytest.raises(WireError, match="unknown batch version 4") as e:
        batch_of([rec(0)], version=4)
    assert e.value.reason == "unknown_version"


@pytest.mark.parametrize("fields, message", [
    ({"trace_flags": 256}, "trace_flags 256, outside 0-255"),
    ({"trace_flags": -1}, "trace_flags -1, outside 0-255"),
    ({"resource": "not json"}, "resource 'not json', not a JSON object"),
    ({"resource": "[1]"}, "not a JSON object"),
])
def test_the_lake_refuses_impossible_trace_flags_and_resources(fields, message):
    batch = batch_of([rec(0), rec(10, **fields)])
    table = wire.to_table(batch)
    with pytest.raises(WireError, match=message) as e:
        validate.check(batch, table, wire.extents(batch))
    assert e.value.reason == "invalid"


def test_a_source_resource_that_is_not_json_is_refused():
    batch = batch_of([rec(0)], {**SOURCE, "resource": "{broken"})
    with pytest.raises(WireError, match="not a JSON object"):
        validate.check(batch, wire.to_table(batch), [])


# The whole path: a real file, the real shipper and aggregator, loglake-query ----------------------

def test_otel_json_lines_are_stored_right(tmp_path, capsys):
    log = pod_log(tmp_path, "shop", "checkout-5d8f7-abcde", "app")
    lines = [OTLP,
             {"timeUnixNano": T0 - 1, "severityNumber": 17, "severityText": "ERROR", "body": "payment failed",
              "attributes": {"order": 7}, "resource": {"service.name": "pay"}, "traceId": TRACE, "spanId": SPAN,
              "traceFlags": 0},
             {"msg": "from upstream", "level": "info", "traceparent": f"00-{TRACE}-{SPAN}-03"},
             {"msg": "an app's own fields", "body": "request body", "attributes": {"a": 1}, "flags": 5}]
    log.write_text("".join(cri(CRI_TS, orjson.dumps(doc).decode()) for doc in lines))
    config = write_config(tmp_path)
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    capsys.readouterr()
    sql = ("SELECT epoch_ns(time) AS t, severity_number, severity_text, body, trace_id, span_id, trace_flags, "
           "attributes, resource FROM logs ORDER BY source_offset")
    assert query_cli(["--config", str(config), "-o", "jsonl", "sql", sql]) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    for r in rows:
        r["attributes"] = r["attributes"] and orjson.loads(r["attributes"])
        r["resource"] = orjson.loads(r["resource"])
    pod = {"k8s.container.restart_count": 0}  # the file is 0.log: every record's resource says so
    assert rows == [
        {"t": T0 - 5_000_000_123, "severity_number": 13, "severity_text": "WARN", "body": "disk almost full",
         "trace_id": TRACE, "span_id": SPAN, "trace_flags": 1,
         "attributes": {"observedTimeUnixNano": str(T0 - 4_000_000_000), "droppedAttributesCount": 0,
                        **OTLP_ATTRIBUTES},
         "resource": {"service.name": "shop", "service.version": "1.4.2", **pod}},
        {"t": T0 - 1, "severity_number": 17, "severity_text": "ERROR", "body": "payment failed", "trace_id": TRACE,
         "span_id": SPAN, "trace_flags": 0, "attributes": {"order": 7}, "resource": {"service.name": "pay", **pod}},
        {"t": T0, "severity_number": 9, "severity_text": "info", "body": "from upstream", "trace_id": TRACE,
         "span_id": SPAN, "trace_flags": 3, "attributes": None, "resource": pod},
        {"t": T0, "severity_number": 0, "severity_text": None, "body": "an app's own fields", "trace_id": None,
         "span_id": None, "trace_flags": None, "attributes": {"body": "request body", "attributes": {"a": 1},
                                                              "flags": 5},
         "resource": pod},
    ]
    # the semantic-convention names read the same data
    assert query_cli(["--config", str(config), "-o", "csv", "sql",
                      'SELECT "service.name", count(*) AS n FROM logs WHERE trace_flags & 1 = 1 GROUP BY 1 '
                      "ORDER BY 1 NULLS FIRST"]) == 0
    assert capsys.readouterr().out == "service.name,n\n,1\nshop,1\n"


def test_schema_has_trace_flags_and_resource_in_the_otel_order():
    names = record.LOG_SCHEMA.names
    assert names[names.index("span_id") + 1] == "trace_flags" and names[names.index("attributes") + 1] == "resource"
    assert record.LOG_SCHEMA.field("trace_flags").type == pa.int32() and record.LOG_SCHEMA.field("resource").nullable
    assert set(record.FIELD_NAMES) - set(record.FIRST_FIELD_NAMES) == {"trace_flags", "resource"}


def test_json_that_cannot_be_stored_as_json_is_kept_as_text_and_costs_no_neighbour(tmp_path, capsys):
    """A lone surrogate escape or a number beyond f64 is valid JSON syntax. Kept raw in ``attributes`` or
    ``resource`` the first broke every JSON query over the lake, and either, as a resource, sent the whole
    batch, the neighbouring lines with it, to quarantine. A line with a lone surrogate is kept whole as
    its body; a resource beyond f64 stays an attribute named "resource"."""
    log = pod_log(tmp_path, "shop", "cart-1", "app")
    texts = ['{"msg":"ordinary","n":1}', r'{"severityText":"info","body":"x","resource":{"a":"\ud800"}}',
             '{"severityText":"info","body":"y","resource":{"f":1e400}}', r'{"msg":"z","a":"\udc00"}',
             r'{"msg":"fine","face":"\ud83d\ude00","big":1e300}']
    log.write_text("".join(cri(CRI_TS, t) for t in texts))
    config = write_config(tmp_path)
    assert shipper(["--config", str(config), "--once"]) == 0
    assert aggregator(["--config", str(config), "--once"]) == 0
    assert not list((tmp_path / "lake" / "quarantine").rglob("*.batch"))
    capsys.readouterr()
    assert query_cli(["--config", str(config), "-o", "jsonl", "sql",
                      "SELECT body, attributes->>'face' AS face, attributes->>'resource' AS kept, resource "
                      "FROM logs ORDER BY source_offset"]) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["body"] for r in rows] == ["ordinary", texts[1], "y", texts[3], "fine"]
    assert rows[4]["face"] == "\U0001F600" and rows[2]["kept"] == '{"f":1e400}'
    assert all(orjson.loads(r["resource"]) == {"k8s.container.restart_count": 0} for r in rows)

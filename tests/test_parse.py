"""Structure from a line's text: JSON, plain text, levels, trace ids."""

from __future__ import annotations

import orjson
import pytest

from schemas.record import FLAG_NON_OBJECT_JSON
from shipper.parse import parse_text, severity

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("key", ["trace_id", "traceId", "trace.id", "traceID", "otelTraceID"])
def test_json_trace_id_names(key):
    p = parse_text(orjson.dumps({"msg": "hi", key: TRACE.upper(), "level": "warn"}).decode())
    assert (p.body, p.trace_id, p.severity_text, p.severity_number, p.attributes) == ("hi", TRACE, "warn", 13, None)


def test_json_datadog_decimal_and_traceparent():
    assert parse_text('{"msg":"a","dd.trace_id":"1234"}').trace_id == format(1234, "032x")
    p = parse_text('{"msg":"a","traceparent":"00-' + TRACE + '-00f067aa0ba902b7-01"}')
    assert (p.trace_id, p.span_id, p.attributes) == (TRACE, "00f067aa0ba902b7", None)


def test_json_keeps_other_fields_as_attributes_and_time():
    p = parse_text('{"time":"2026-11-24T10:00:00.25Z","level":30,"message":"ok","user":{"id":7},"n":1}')
    assert p.time_ns == 1795514400_250000000
    assert (p.severity_text, p.severity_number) == ("30", 9)
    assert orjson.loads(p.attributes) == {"user": {"id": 7}, "n": 1}


def test_json_that_is_not_an_object_is_kept_and_flagged():
    p = parse_text("[1, 2, 3]")
    assert p.body == "[1, 2, 3]" and p.flags & FLAG_NON_OBJECT_JSON


def test_broken_json_is_plain_text():
    p = parse_text('{"msg": "unterminated ERROR')
    assert p.body == '{"msg": "unterminated ERROR' and p.severity_number == 17


@pytest.mark.parametrize("text, level, number, trace", [
    ("2026-11-24 10:00:00 ERROR db down", "ERROR", 17, None),
    (f"GET /x level=warn trace_id={TRACE}", "warn", 13, TRACE),
    ("nothing special here", None, 0, None),
    (f"call traceparent=00-{TRACE}-00f067aa0ba902b7-01 INFO", "INFO", 9, TRACE),
])
def test_plain_text(text, level, number, trace):
    p = parse_text(text)
    assert (p.severity_text, p.severity_number, p.trace_id) == (level, number, trace)


@pytest.mark.parametrize("level, number", [("TRACE", 1), ("debug", 5), ("Information", 9), ("WARNING", 13),
                                           ("err", 17), ("CRITICAL", 21), ("panic", 21), ("weird", 0), (50, 17)])
def test_severity_mapping(level, number):
    assert severity(level)[1] == number

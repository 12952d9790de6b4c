"""Structure from a line's text: JSON, plain text, levels, trace ids (through the native core)."""

from __future__ import annotations

import orjson
import pytest

from schemas.record import FLAG_NON_OBJECT_JSON
from tests.conftest import build_records

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
# A plain line's runtime time is the wall clock: where a fixed date's parsing is tested, the window a
# line's own time must fall in (tests/test_attack_time.py) is opened wide enough for it.
ANY_PAST = {"event_time_max_past_s": 100 * 365 * 86400}


def parse(text: str, **settings: object) -> dict:
    """The one record a plain-text line becomes (no redaction, so only parsing shows)."""
    (rec,) = build_records([text.encode()], redact=(), **settings).records
    return rec


@pytest.mark.parametrize("key", ["trace_id", "traceId", "trace.id", "traceID", "otelTraceID"])
def test_json_trace_id_names(key):
    r = parse(orjson.dumps({"msg": "hi", key: TRACE.upper(), "level": "warn"}).decode())
    assert (r["body"], r["trace_id"], r["severity_text"], r["severity_number"]) == ("hi", TRACE, "warn", 13)
    assert "attributes" not in r


def test_json_datadog_decimal_and_traceparent():
    assert parse('{"msg":"a","dd.trace_id":"1234"}')["trace_id"] == format(1234, "032x")
    r = parse('{"msg":"a","traceparent":"00-' + TRACE + '-00f067aa0ba902b7-01"}')
    assert (r["trace_id"], r["span_id"], r["trace_flags"], r.get("attributes")) == (TRACE, "00f067aa0ba902b7", 1, None)


def test_json_keeps_other_fields_as_attributes_and_time():
    r = parse('{"time":"2026-11-24T10:00:00.25Z","level":30,"message":"ok","user":{"id":7},"n":1}', **ANY_PAST)
    assert r["time"] == 1795514400_250000000 and r["observed_time"] != r["time"]
    assert (r["body"], r["severity_text"], r["severity_number"]) == ("ok", "30", 9)
    assert orjson.loads(r["attributes"]) == {"user": {"id": 7}, "n": 1}


def test_json_fields_without_a_role_stay_attributes():
    # No role at all: the whole line is the body; a losing alias ("msg" beside "message") is kept too.
    text = '{"user":"ann","n":1}'
    r = parse(text)
    assert r["body"] == text and orjson.loads(r["attributes"]) == {"user": "ann", "n": 1}
    r = parse('{"message":"m","msg":"other","level":"info","k":[1,2]}')
    assert r["body"] == "m" and orjson.loads(r["attributes"]) == {"msg": "other", "k": [1, 2]}


@pytest.mark.parametrize("ts, ns", [(1795514400123456789, 1795514400123456789),  # ns, exactly (not via float)
                                    (1795514400123, 1795514400123000000), (1795514400, 1795514400000000000)])
def test_json_integer_epoch_time(ts, ns):
    assert parse('{"msg":"a","ts":%d}' % ts, **ANY_PAST)["time"] == ns


def test_static_labels_merge_into_attributes_and_the_line_wins():
    labels = {"team": "shop", "env": "prod"}
    r = parse('{"msg":"a","env":"dev","n":1}', labels=labels)
    assert orjson.loads(r["attributes"]) == {"team": "shop", "env": "dev", "n": 1}
    assert orjson.loads(parse("plain text", labels=labels)["attributes"]) == labels


def test_json_that_is_not_an_object_is_kept_and_flagged():
    b = build_records([b"[1, 2, 3]"], redact=())
    (r,) = b.records
    assert r["body"] == "[1, 2, 3]" and r["flags"] & FLAG_NON_OBJECT_JSON
    assert b.errors == {"non_object_json": 1}


def test_broken_json_is_plain_text():
    r = parse('{"msg": "unterminated ERROR')
    assert (r["body"], r["severity_number"], r["flags"]) == ('{"msg": "unterminated ERROR', 17, 0)


@pytest.mark.parametrize("text, level, number, trace", [
    ("2026-11-24 10:00:00 ERROR db down", "ERROR", 17, None),
    (f"GET /x level=warn trace_id={TRACE}", "warn", 13, TRACE),
    ("nothing special here", None, 0, None),
    (f"call traceparent=00-{TRACE}-00f067aa0ba902b7-01 INFO", "INFO", 9, TRACE),
])
def test_plain_text(text, level, number, trace):
    r = parse(text)
    assert (r["body"], r.get("severity_text"), r["severity_number"], r.get("trace_id")) == (text, level, number, trace)
    assert r.get("trace_flags") == (1 if "traceparent" in text else None)


@pytest.mark.parametrize("level, number", [("TRACE", 1), ("debug", 5), ("Information", 9), ("WARNING", 13),
                                           ("err", 17), ("CRITICAL", 21), ("panic", 21), ("weird", 0), (50, 17)])
def test_severity_mapping(level, number):
    r = parse(orjson.dumps({"msg": "x", "level": level}).decode())
    assert (r["severity_text"], r["severity_number"]) == (str(level), number)

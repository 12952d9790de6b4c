"""Multi-line events joined by continuation rules, with a flush timeout (through the native core)."""

from __future__ import annotations

import pytest

from schemas.record import FLAG_BAD_PREFIX, FLAG_PARTIAL, FLAG_TRUNCATED
from shipper.config import ShipperConfig
from shipper.records import processing
from tests.conftest import build_records, decode_records, line_by_line

JAVA = [b"2026-11-24 10:00:00 ERROR request failed", b"java.lang.IllegalStateException: boom",
        b"\tat com.shop.Cart.add(Cart.java:42)", b"\tat com.shop.Api.post(Api.java:7)",
        b"Caused by: java.io.IOException: disk", b"\t... 12 more", b"2026-11-24 10:00:01 INFO next"]
PYTHON = [b"ERROR:root:failed", b"Traceback (most recent call last):", b'  File "app.py", line 3, in <module>',
          b"    main()", b"ZeroDivisionError: division by zero", b"INFO:root:recovered"]
GO = [b"panic: runtime error: index out of range [5] with length 3", b"", b"goroutine 1 [running]:",
      b"main.main()", b"\t/app/main.go:12 +0x1d", b"exit status 2", b"level=info msg=restarted"]
TS = b"2026-11-24T10:00:00.000000001Z"


def run(lines: list[bytes], presets: tuple[str, ...], custom: tuple[str, ...] = ()) -> list[bytes]:
    recs = build_records(lines, multiline=presets, multiline_patterns=custom, redact=()).records
    return [r["body"].encode() for r in recs]


def test_java_stack_trace():
    assert run(JAVA, ("java",)) == [JAVA[0], b"\n".join(JAVA[1:6]), JAVA[6]]


def test_python_traceback_joins_the_log_line_that_raised():
    assert run(PYTHON, ("python",)) == [b"\n".join(PYTHON[:5]), PYTHON[5]]


def test_go_panic():
    # The last line is logfmt: its body is its msg.
    assert run(GO, ("go",)) == [b"\n".join(GO[:6]), b"restarted"]


def test_custom_pattern_and_unknown_preset():
    assert run([b"BEGIN", b"| more", b"| end", b"BEGIN 2"], (), (r"^\|",)) == [b"BEGIN\n| more\n| end", b"BEGIN 2"]
    with pytest.raises(ValueError, match="unknown multiline preset"):
        processing(ShipperConfig(node_name="n1", multiline=("cobol",)))


@pytest.mark.parametrize("flush_ms", [60_000, 0])
def test_flush_timeout_and_streams_apart(flush_ms):
    b, feed = line_by_line("cri", multiline=("java",), multiline_flush_ms=flush_ms)
    for stream, text in [(b"stdout", b"Exception in thread main"), (b"stderr", b"\tat stderr.is.Separate(X.java:1)"),
                         (b"stdout", b"\tat a.b.C(C.java:1)")]:
        assert feed(b" ".join([TS, stream, b"F", text])) == []
    assert b.commit_floor() == 0
    if flush_ms:
        assert len(b.expired()) == 0  # not yet
        return
    done = decode_records(b.expired())
    assert [(r["stream"], r["body"]) for r in done] == [("stdout", "Exception in thread main\n\tat a.b.C(C.java:1)"),
                                                        ("stderr", "\tat stderr.is.Separate(X.java:1)")]
    assert b.commit_floor() is None


def test_size_cap_truncates():
    lines = [b"Exception: x"] + [b"\tat some.long.Frame(F.java:1)"] * 10
    b = build_records(lines, multiline=("java",), max_record_bytes=30)
    (r,) = b.records
    assert (len(r["body"]), r["flags"], r["source_end"]) == (30, FLAG_TRUNCATED, sum(len(ln) + 1 for ln in lines))
    assert b.errors == {"truncated": 1}


def test_event_keeps_the_flags_of_its_own_lines():
    # Lines without a CRI prefix form their own event, flagged as they are; the stdout event is
    # ended by a piece whose end never came, and that piece's flag stays on its own record.
    lines = [b"Exception: no prefix", b"\tat x.Y(Y.java:1)", TS + b" stdout F Exception: x",
             TS + b" stdout F \tat a.b.C(C.java:1)", TS + b" stdout P cut off"]
    recs = build_records(lines, "cri", multiline=("java",)).records
    assert [(r["body"], r["flags"]) for r in sorted(recs, key=lambda r: r["source_offset"])] == [
        ("Exception: no prefix\n\tat x.Y(Y.java:1)", FLAG_BAD_PREFIX),
        ("Exception: x\n\tat a.b.C(C.java:1)", 0), ("cut off", FLAG_PARTIAL)]

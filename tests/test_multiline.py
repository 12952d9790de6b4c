"""Multi-line events joined by continuation rules, with a flush timeout."""

from __future__ import annotations

import pytest

from shipper.multiline import MultilineJoiner, compile_rules

JAVA = [b"2026-11-24 10:00:00 ERROR request failed", b"java.lang.IllegalStateException: boom",
        b"\tat com.shop.Cart.add(Cart.java:42)", b"\tat com.shop.Api.post(Api.java:7)",
        b"Caused by: java.io.IOException: disk", b"\t... 12 more", b"2026-11-24 10:00:01 INFO next"]
PYTHON = [b"ERROR:root:failed", b"Traceback (most recent call last):", b'  File "app.py", line 3, in <module>',
          b"    main()", b"ZeroDivisionError: division by zero", b"INFO:root:recovered"]
GO = [b"panic: runtime error: index out of range [5] with length 3", b"", b"goroutine 1 [running]:",
      b"main.main()", b"\t/app/main.go:12 +0x1d", b"exit status 2", b"level=info msg=restarted"]


def run(lines: list[bytes], presets: tuple[str, ...], custom: tuple[str, ...] = ()) -> list[bytes]:
    j = MultilineJoiner(compile_rules(presets, custom), max_bytes=10_000, flush_ms=1000)
    out = []
    for i, ln in enumerate(lines):
        ev = j.feed(i * 100, i * 100 + 100, i, "stdout", ln)
        if ev:
            out.append(b"".join(ev.parts))
    out += [b"".join(e.parts) for e in j.drain()]
    return out


def test_java_stack_trace():
    assert run(JAVA, ("java",)) == [JAVA[0], b"\n".join(JAVA[1:6]), JAVA[6]]


def test_python_traceback_joins_the_log_line_that_raised():
    assert run(PYTHON, ("python",)) == [b"\n".join(PYTHON[:5]), PYTHON[5]]


def test_go_panic():
    assert run(GO, ("go",)) == [b"\n".join(GO[:6]), GO[6]]


def test_custom_pattern_and_unknown_preset():
    assert run([b"BEGIN", b"| more", b"| end", b"BEGIN 2"], (), (r"^\|",)) == [b"BEGIN\n| more\n| end", b"BEGIN 2"]
    with pytest.raises(ValueError, match="unknown multiline preset"):
        compile_rules(("cobol",), ())


def test_flush_timeout_and_streams_apart():
    j = MultilineJoiner(compile_rules(("java",), ()), max_bytes=10_000, flush_ms=500)
    assert j.feed(0, 10, 1, "stdout", b"Exception in thread main") is None
    assert j.feed(10, 20, 1, "stderr", b"\tat stderr.is.Separate(X.java:1)") is None
    assert j.feed(20, 30, 1, "stdout", b"\tat a.b.C(C.java:1)") is None
    assert j.oldest_offset() == 0
    assert j.expired() == []
    done = j.expired(now=10**9)
    assert sorted(b"".join(e.parts) for e in done) == [b"\tat stderr.is.Separate(X.java:1)",
                                                        b"Exception in thread main\n\tat a.b.C(C.java:1)"]
    assert j.oldest_offset() is None


def test_size_cap_truncates():
    j = MultilineJoiner(compile_rules(("java",), ()), max_bytes=30, flush_ms=500)
    j.feed(0, 1, 1, "stdout", b"Exception: x")
    for i in range(10):
        j.feed(i + 1, i + 2, 1, "stdout", b"\tat some.long.Frame(F.java:1)")
    (ev,) = j.drain()
    assert ev.truncated and sum(len(p) for p in ev.parts) == 30

"""CRI line parsing and partial-line joining."""

from __future__ import annotations

import pytest

from shipper import cri


def test_parse_line():
    line = cri.parse_line(b"2026-11-24T10:00:00.123456789Z stderr P half a line")
    assert line == cri.CriLine(1795514400_123456789, "stderr", True, b"half a line")
    assert cri.parse_line(b"2026-11-24T10:00:00Z stdout F ").text == b""


@pytest.mark.parametrize("ts, ns", [
    (b"2026-11-24T10:00:00Z", 1795514400_000000000),
    (b"2026-11-24T10:00:00.5Z", 1795514400_500000000),
    (b"2026-11-24T12:00:00.000001+02:00", 1795514400_000001000),
    (b"2026-11-24T10:00:00.1234567891Z", 1795514400_123456789),
])
def test_timestamps(ts, ns):
    assert cri.parse_rfc3339_ns(ts) == ns


@pytest.mark.parametrize("bad", [b"", b"hello world", b"2026-11-24T10:00:00Z stdin F x",
                                 b"2026-11-24T10:00:00Z stdout X x", b"yesterday stdout F x"])
def test_malformed_prefix(bad):
    assert cri.parse_line(bad) is None


def test_partials_join_per_stream():
    j = cri.PartialJoiner(max_bytes=1000)
    feed = [(0, b"T stdout P ab"), (10, b"T stderr F err"), (20, b"T stdout P cd"), (30, b"T stdout F ef")]
    out = []
    for off, raw in feed:
        ts, stream, tag, text = raw.split(b" ", 3)
        r = j.feed(off, cri.CriLine(1, stream.decode(), tag == b"P", text))
        if r:
            out.append((r.offset, r.stream, r.text))
        if off == 20:
            assert j.oldest_pending_offset() == 0
    assert out == [(10, "stderr", b"err"), (0, "stdout", b"abcdef")]
    assert j.oldest_pending_offset() is None


def test_overlong_record_is_truncated_and_flagged():
    j = cri.PartialJoiner(max_bytes=5)
    assert j.feed(0, cri.CriLine(1, "stdout", True, b"abcd")) is None
    assert j.feed(9, cri.CriLine(1, "stdout", True, b"efgh")) is None
    r = j.feed(18, cri.CriLine(1, "stdout", False, b"ijkl"))
    assert (r.offset, r.text, r.truncated) == (0, b"abcde", True)

"""Joining runtime-split lines per stream, with a size cap."""

from __future__ import annotations

from shipper.docker import parse_line as docker_line
from shipper.partial import PartialJoiner, RuntimeLine


def test_partials_join_per_stream():
    j = PartialJoiner(max_bytes=1000)
    feed = [(0, b"T stdout P ab"), (10, b"T stderr F err"), (20, b"T stdout P cd"), (30, b"T stdout F ef")]
    out = []
    for off, raw in feed:
        ts, stream, tag, text = raw.split(b" ", 3)
        r = j.feed(off, off + 10, RuntimeLine(1, stream.decode(), tag == b"P", text))
        if r:
            out.append((r.offset, r.end, r.stream, r.text))
        if off == 20:
            assert j.oldest_pending_offset() == 0
    # a joined record spans from its first piece to its last, over the other stream's line in between
    assert out == [(10, 20, "stderr", b"err"), (0, 40, "stdout", b"abcdef")]
    assert j.oldest_pending_offset() is None


def test_overlong_record_is_truncated_and_flagged():
    j = PartialJoiner(max_bytes=5)
    assert j.feed(0, 9, RuntimeLine(1, "stdout", True, b"abcd")) is None
    assert j.feed(9, 18, RuntimeLine(1, "stdout", True, b"efgh")) is None
    r = j.feed(18, 27, RuntimeLine(1, "stdout", False, b"ijkl"))
    assert (r.offset, r.end, r.text, r.truncated) == (0, 27, b"abcde", True)


def test_docker_partial_records_join():
    j = PartialJoiner(max_bytes=1000)
    recs = [b'{"log":"first half ","stream":"stdout","time":"2026-11-24T10:00:00.000000001Z"}',
            b'{"log":"oops\\n","stream":"stderr","time":"2026-11-24T10:00:00.000000002Z"}',
            b'{"log":"second half\\n","stream":"stdout","time":"2026-11-24T10:00:00.000000003Z"}']
    out = []
    off = 0
    for raw in recs:
        r = j.feed(off, off + len(raw) + 1, docker_line(raw))
        off += len(raw) + 1
        if r:
            out.append((r.offset, r.stream, r.text, r.time_ns))
    assert out == [(len(recs[0]) + 1, "stderr", b"oops", 1795514400_000000002),
                   (0, "stdout", b"first half second half", 1795514400_000000001)]


def test_docker_rejects_other_json():
    assert docker_line(b'{"msg":"app json"}') is None
    assert docker_line(b'not json') is None

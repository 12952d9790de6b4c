"""Joining runtime-split lines per stream, with a size cap (through the native core)."""

from __future__ import annotations

from schemas.record import FLAG_BAD_PREFIX, FLAG_TRUNCATED
from shipper.records import detect_format
from tests.conftest import build_records, line_by_line

TS = "2026-11-24T10:00:00.000000001Z"


def test_partials_join_per_stream():
    b, feed = line_by_line("cri")
    lines = [f"{TS} {s} {tag} {text}".encode()
             for s, tag, text in [("stdout", "P", "ab"), ("stderr", "F", "err"), ("stdout", "P", "cd"),
                                  ("stdout", "F", "ef")]]
    offs = [0]
    for ln in lines:
        offs.append(offs[-1] + len(ln) + 1)
    out = []
    for i, ln in enumerate(lines):
        out += [(r["source_offset"], r["source_end"], r["stream"], r["body"]) for r in feed(ln)]
        if i == 2:
            assert b.commit_floor() == 0
    # a joined record spans from its first piece to its last, over the other stream's line in between
    assert out == [(offs[1], offs[2], "stderr", "err"), (0, offs[4], "stdout", "abcdef")]
    assert b.commit_floor() is None


def test_overlong_record_is_truncated_and_flagged():
    lines = [f"{TS} stdout {tag} {text}".encode() for tag, text in [("P", "abcd"), ("P", "efgh"), ("F", "ijkl")]]
    b = build_records(lines, "cri", drain=False, max_record_bytes=5)
    (r,) = b.records
    assert (r["source_offset"], r["source_end"], r["body"], r["flags"]) == (
        0, sum(len(ln) + 1 for ln in lines), "abcde", FLAG_TRUNCATED)
    assert b.errors == {"truncated": 1}


def test_docker_partial_records_join():
    recs = [b'{"log":"first half ","stream":"stdout","time":"2026-11-24T10:00:00.000000001Z"}',
            b'{"log":"oops\\n","stream":"stderr","time":"2026-11-24T10:00:00.000000002Z"}',
            b'{"log":"second half\\n","stream":"stdout","time":"2026-11-24T10:00:00.000000003Z"}']
    assert detect_format(recs[0]) == "docker"
    out = [(r["source_offset"], r["stream"], r["body"], r["observed_time"])
           for r in build_records(recs, "docker", drain=False).records]
    assert out == [(len(recs[0]) + 1, "stderr", "oops", 1795514400_000000002),
                   (0, "stdout", "first half second half", 1795514400_000000001)]


def test_docker_rejects_other_json():
    for line, body in [(b'{"msg":"app json"}', "app json"), (b"not json", "not json")]:
        assert detect_format(line) == "plain"
        b = build_records([line], "docker")
        assert [(r["body"], r["flags"]) for r in b.records] == [(body, FLAG_BAD_PREFIX)]
        assert b.errors == {"bad_prefix": 1}

"""The native per-line core on hostile input: it never fails, and every byte of a file ends up in a record."""

from __future__ import annotations

import random

import pytest

from tests.conftest import build_records

PIECES = [b"2026-11-24T10:00:00.123456789Z stdout F ", b"2026-11-24T10:00:00Z stderr P ", b"2026-13-99T99:99:99Z ",
          b"stdout F ", b'{"msg":"x","level":', b'"trace_id":"', b"4bf92f3577b34da6a3ce929d0e0e4736", b'"}', b"}",
          b"{", b"[", b'\\u00e9\\"', b"\xff\xfe", b"\xe2\x82", b"\x00", b"\r", b"level=warn ", b"trace_id=12345 ",
          b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", b"Bearer abcdefghijkl ", b"a@b.example.com",
          b"4111 1111 1111 1111", b"AKIAIOSFODNN7EXAMPLE", b"https://u:p@h/", b"\tat x.Y(Y.java:1)", b"ERROR ",
          b'"ts":1e400,', b'"time":-1,', b'"level":[1,{"a":null}],', b"\xf0\x9f\x98\x80", "é".encode() * 40]


def random_lines(rng: random.Random, n: int) -> list[bytes]:
    return [b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 8))) for _ in range(n)]


@pytest.mark.parametrize("fmt", ["cri", "docker", "plain"])
@pytest.mark.parametrize("seed", range(4))
def test_every_byte_lands_in_exactly_one_record(fmt, seed):
    lines = random_lines(random.Random(seed), 400)
    built = build_records(lines, fmt, max_record_bytes=200)
    spans = sorted((r["source_offset"], r["source_end"]) for r in built.records)
    # CRI P pieces join the next line of their stream, so a record may span others: count the bytes instead
    covered = sum(end - start for start, end in spans) if fmt != "cri" else None
    total = sum(len(line) + 1 for line in lines)
    if covered is not None:
        assert covered == total and len(built.records) == len(lines)
    assert spans[0][0] == 0 and max(end for _, end in spans) == total
    assert all(isinstance(r["body"], str) and len(r["body"].encode()) <= 200 * 3 for r in built.records)


@pytest.mark.parametrize("seed", range(2))
def test_multiline_and_redaction_on_hostile_input(seed):
    lines = random_lines(random.Random(100 + seed), 400)
    built = build_records(lines, "plain", multiline=("java", "python", "go"), redact_patterns=(r"u:p",))
    starts = [r["source_offset"] for r in built.records]
    assert starts == sorted(starts) and starts[0] == 0
    assert built.records[-1]["source_end"] == sum(len(line) + 1 for line in lines)

"""CRI line parsing (through the native core)."""

from __future__ import annotations

import pytest

from schemas.record import FLAG_BAD_PREFIX, FLAG_PARTIAL
from shipper.records import detect_format
from tests.conftest import build_records


def test_parse_line():
    line = b"2026-11-24T10:00:00.123456789Z stderr P half a line"
    assert detect_format(line) == "cri"
    assert build_records([line], "cri", drain=False).records == []  # a P piece waits for its F
    (r,) = build_records([line], "cri").records  # the file ended: what came, flagged partial
    assert (r["observed_time"], r["stream"], r["flags"], r["body"]) == (1795514400_123456789, "stderr",
                                                                         FLAG_PARTIAL, "half a line")
    assert (r["source_offset"], r["source_end"]) == (0, len(line) + 1)
    (r,) = build_records([b"2026-11-24T10:00:00Z stdout F "], "cri").records
    assert (r["body"], r["stream"], r["flags"]) == ("", "stdout", 0)


@pytest.mark.parametrize("ts, ns", [
    (b"2026-11-24T10:00:00Z", 1795514400_000000000),
    (b"2026-11-24T10:00:00.5Z", 1795514400_500000000),
    (b"2026-11-24T12:00:00.000001+02:00", 1795514400_000001000),
    (b"2026-11-24T10:00:00.1234567891Z", 1795514400_123456789),
])
def test_timestamps(ts, ns):
    (r,) = build_records([ts + b" stdout F x"], "cri").records
    assert (r["observed_time"], r["time"], r["body"]) == (ns, ns, "x")


@pytest.mark.parametrize("bad", [b"", b"hello world", b"2026-11-24T10:00:00Z stdin F x",
                                 b"2026-11-24T10:00:00Z stdout X x", b"yesterday stdout F x"])
def test_malformed_prefix(bad):
    b = build_records([bad], "cri")
    (r,) = b.records
    assert (r["body"], r["flags"], "stream" in r) == (bad.decode(), FLAG_BAD_PREFIX, False)
    assert b.errors["bad_prefix"] == 1

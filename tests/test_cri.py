"""CRI line parsing."""

from __future__ import annotations

import pytest

from shipper import cri
from shipper.partial import RuntimeLine


def test_parse_line():
    line = cri.parse_line(b"2026-11-24T10:00:00.123456789Z stderr P half a line")
    assert line == RuntimeLine(1795514400_123456789, "stderr", True, b"half a line")
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

"""A workload cannot move its lines in time: a line's own time stands only near the runtime's.

The attack (security issue item 4): JSON lines claiming 1970, year 9999 (which wrapped to 1816) or year 0
placed their records outside retention, which deleted them right after ingest, and spread them over
every hour compaction had to walk. Now a claim outside [shipper] event_time_max_past_s /
event_time_max_future_s around the runtime's time, or one that is no time at all, gives way to the
runtime's time; the record is flagged FLAG_TIME_CLAIMED and keeps the claim, as written, in attributes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aggregator.cli.run import main as aggregator
from runtime.errors import ConfigError
from schemas.record import CLAIMED_TIME_ATTRIBUTE, FLAG_BAD_PREFIX, FLAG_TIME_CLAIMED
from shipper import config as shipper_config
from shipper.cli import main as shipper
from tests.conftest import build_records, cri, pod_log, write_config

S = 1_000_000_000
DAY = 86_400 * S
# No redaction: an epoch-ms claim passes the card_number rule's Luhn check one time in ten.
NO_REDACT = {"redact": []}


def rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // S)) + f".{ns % S:09d}Z"


def claim_line(seq: int, claim: str, key: str = "time") -> str:
    """A JSON line whose time field is ``claim``, raw JSON text, kept byte for byte."""
    return '{"msg":"seq %d","%s":%s,"n":%d}' % (seq, key, claim, seq)


def ship_and_store(config: Path) -> None:
    assert shipper(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0
    assert aggregator(["--config", str(config), "--once", "--log-level", "WARNING"]) == 0


def stored(config: Path) -> dict[str, tuple[int, int, int, str | None]]:
    """body → (time ns, observed_time ns, flags, attributes)."""
    import query
    rows = query.connect(str(config)).execute(
        "SELECT body, epoch_ns(time), epoch_ns(observed_time), flags, attributes FROM logs").fetchall()
    return {body: (t, observed, flags, attrs) for body, t, observed, flags, attrs in rows}


def attack(tmp_path: Path, observed: int) -> list[tuple[str, str, int | None]]:
    """One container's CRI file of time claims, all written by the runtime at ``observed``.
    Returns (line, raw claim, the claim in ns if it lies within the default window) per line."""
    cases: list[tuple[str, str, int | None]] = [
        ("time", "1", None),                                   # 1970
        ("time", '"9999-12-31T23:59:59Z"', None),              # wrapped to 1816 before
        ("time", '"0000-01-01"', None),                        # year 0 (and no time of day)
        ("ts", '"2262-04-12T00:00:00Z"', None),                # just past the end of i64 nanoseconds
        ("time", '"2262-04-11T23:47:16.854775808Z"', None),    # one nanosecond past it
        ("timestamp", "1e400", None),                          # a float past any range
        ("time", "-1", None),                                  # before 1970
        ("@timestamp", '"yesterday"', None),                   # no time at all
        ("time", '"' + rfc3339(observed - 8 * DAY) + '"', None),
        ("time", '"' + rfc3339(observed + 2 * 3600 * S) + '"', None),
        ("time", '"' + rfc3339(observed - DAY) + '"', observed - DAY),
        ("time", '"' + rfc3339(observed + 600 * S) + '"', observed + 600 * S),
        ("ts", str((observed - 3600 * S) // 1_000_000), (observed - 3600 * S) // 1_000_000 * 1_000_000),  # epoch ms
    ]
    log = pod_log(tmp_path, "evil", "clock-1", "app")
    lines = [(claim_line(seq, claim, key), claim, within) for seq, (key, claim, within) in enumerate(cases)]
    log.write_text("".join(cri(rfc3339(observed), line) for line, _, _ in lines))
    return lines


def assert_stored(config: Path, lines: list[tuple[str, str, int | None]], observed: int) -> None:
    got = stored(config)
    assert len(got) == len(lines)  # every line stored, none lost to retention or a wrapped time
    for seq, (_, claim, within) in enumerate(lines):
        t, obs, flags, attrs = got[f"seq {seq}"]
        assert obs == observed, claim
        if within is None:
            assert (t, flags & FLAG_TIME_CLAIMED) == (observed, FLAG_TIME_CLAIMED), claim
            assert attrs == '{"n":%d,"%s":%s}' % (seq, CLAIMED_TIME_ATTRIBUTE, claim)  # the claim as written
        else:
            assert (t, flags, attrs) == (within, 0, '{"n":%d}' % seq), claim


def test_time_claims_outside_the_window_give_way_to_the_runtime(tmp_path):
    observed = time.time_ns() - 60 * S
    lines = attack(tmp_path, observed)
    config = write_config(tmp_path, shipper=NO_REDACT)
    ship_and_store(config)
    assert_stored(config, lines, observed)


def test_the_window_is_configurable(tmp_path):
    observed = time.time_ns() - 60 * S
    lines = attack(tmp_path, observed)
    config = write_config(tmp_path, shipper={**NO_REDACT, "event_time_max_past_s": 2 * 3600,
                                             "event_time_max_future_s": 0})
    ship_and_store(config)
    got = stored(config)
    assert len(got) == len(lines)
    # the epoch-ms claim an hour back is still believed; a day back and 10 minutes ahead no longer are
    assert [(body, flags) for body, (_, _, flags, _) in sorted(got.items()) if not flags & FLAG_TIME_CLAIMED] == [
        ("seq 12", 0)]
    assert got["seq 10"][:3] == got["seq 11"][:3] == (observed, observed, FLAG_TIME_CLAIMED)


@pytest.mark.parametrize("key", ["event_time_max_past_s", "event_time_max_future_s"])
def test_a_negative_window_is_a_config_error(tmp_path, key):
    config = write_config(tmp_path, shipper={key: -1})
    with pytest.raises(ConfigError, match=key):
        shipper_config.load(str(config))


# Through the native core alone, with the runtime's time fixed by the CRI prefix.
OBSERVED = 1_795_514_400_000_000_000  # 2026-11-24T10:00:00Z
PREFIX = rfc3339(OBSERVED).encode() + b" stdout F "


def one(line: str, fmt: str = "cri", **shipper: object) -> dict:
    raw = line.encode()
    (rec,) = build_records([PREFIX + raw if fmt == "cri" else raw], fmt, redact=(), **shipper).records
    return rec


@pytest.mark.parametrize("claim, kept", [
    (OBSERVED - 7 * DAY, True), (OBSERVED - 7 * DAY - 1, False),
    (OBSERVED + 3600 * S, True), (OBSERVED + 3600 * S + 1, False),
])
def test_window_edges_to_the_nanosecond(claim, kept):
    r = one('{"msg":"m","time":"%s"}' % rfc3339(claim))
    assert (r["time"], r["flags"]) == ((claim, 0) if kept else (OBSERVED, FLAG_TIME_CLAIMED))


def test_a_zero_window_believes_only_the_runtimes_own_time():
    r = one('{"msg":"m","time":"%s"}' % rfc3339(OBSERVED), event_time_max_past_s=0, event_time_max_future_s=0)
    assert (r["time"], r["flags"]) == (OBSERVED, 0)
    r = one('{"msg":"m","time":"%s"}' % rfc3339(OBSERVED - 1), event_time_max_past_s=0, event_time_max_future_s=0)
    assert (r["time"], r["flags"]) == (OBSERVED, FLAG_TIME_CLAIMED)


def test_the_mark_is_the_shippers_not_the_lines():
    # A line's own _claimed_time field cannot stand beside, or for, the shipper's.
    r = one('{"msg":"m","_claimed_time":"forged","time":1}')
    assert (r["flags"], r["attributes"]) == (FLAG_TIME_CLAIMED, '{"_claimed_time":1}')


def test_logfmt_and_docker_claims_and_null():
    r = one("level=info msg=m time=1970-01-01T00:00:01Z")
    assert (r["time"], r["flags"], r["attributes"]) == (OBSERVED, FLAG_TIME_CLAIMED,
                                                        '{"_claimed_time":"1970-01-01T00:00:01Z"}')
    docker = '{"log":"{\\"msg\\":\\"m\\",\\"time\\":1}\\n","stream":"stdout","time":"%s"}' % rfc3339(OBSERVED)
    r = one(docker, "docker")
    assert (r["time"], r["observed_time"], r["flags"]) == (OBSERVED, OBSERVED, FLAG_TIME_CLAIMED)
    r = one('{"msg":"m","time":null}')  # a null claims nothing
    assert (r["time"], r["flags"], "attributes" in r) == (OBSERVED, 0, False)


def test_claims_are_counted_for_metrics():
    lines = [PREFIX + b'{"msg":"m","time":1}', PREFIX + b'{"msg":"m","ts":"0000-01-01T00:00:00Z"}',
             PREFIX + ('{"msg":"m","time":"%s"}' % rfc3339(OBSERVED)).encode()]
    assert build_records(lines, "cri", redact=()).errors == {"time_claimed": 2}


def test_a_runtime_time_out_of_range_is_a_bad_prefix_not_a_wrapped_time():
    before = time.time_ns()
    (r,) = build_records([b"9999-12-31T23:59:59.000000000Z stdout F x"], "cri").records
    assert r["flags"] == FLAG_BAD_PREFIX and r["time"] >= before

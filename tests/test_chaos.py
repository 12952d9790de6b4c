"""The chaos suite's short form (benchmarks/chaos, `python -m benchmarks.chaos`): kill -9 and log rotation,
then every line written must be stored exactly once, and `loglake-aggregator verify` must say so.

The Kafka scenario runs its own broker (deploy/kafka/kafka.sh on free ports, data under the test's
tmp dir), not the session broker; like the other Kafka tests it needs LOGLAKE_TEST_CERTS (as
`make test` sets) and is skipped without it. CHAOS_SEED picks other random choices.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:   # the `pytest` script, unlike `python -m pytest`, does not add the repository root
    sys.path.insert(0, str(ROOT))
from benchmarks import chaos  # noqa: E402

SEED = int(os.environ.get("CHAOS_SEED", "20261201"))


def assert_exactly_once(r: dict) -> None:
    why = chaos.describe(r)
    assert "lost" in r, why                      # the run got as far as counting
    assert r["lost"] == 0, why
    assert r["duplicated"] == 0, why
    assert r["verify_ok"], why
    assert not r["problems"], why                # orphans, mangled rows, crashes, census, self-check


def test_harness_counts_a_quiet_run_exactly(tmp_path):
    """No kills, no rotations: the harness itself must find 0 lost, 0 duplicated, and its self-check
    (one row removed → one more lost; one source stored twice → that many more duplicates) must hold."""
    opts = chaos.Options.short(cycles=0, rotate=None, files=4, rate=500, warmup_s=1.0, settle_s=1.0, quiet_s=2.0,
                               seed=SEED)
    r = chaos.run_scenario("none", opts, tmp_path)
    assert r["written"] > 500 and r["census"]["ok"], chaos.describe(r)
    assert r["self_check"]["ok"], r["self_check"]
    assert_exactly_once(r)


def test_spool_survives_kill_9_and_rotation(tmp_path):
    opts = chaos.Options.short(cycles=3, seed=SEED)
    r = chaos.run_scenario("spool", opts, tmp_path)
    assert r["rotations"].get("copytruncate", 0) >= 1 and r["rotations"].get("rename", 0) >= 1, r["rotations"]
    assert sum(r["kills"].values()) == 3, r["kills"]
    assert_exactly_once(r)


@pytest.mark.kafka
def test_kafka_mixed_survives_kill_9_of_every_component(tmp_path):
    certs = os.environ.get("LOGLAKE_TEST_CERTS")
    if not certs:
        pytest.skip("no broker: run the tests with 'make test' (LOGLAKE_TEST_CERTS unset)")
    opts = chaos.Options.short(cycles=3, seed=SEED, certs=Path(certs))
    r = chaos.run_scenario("mixed", opts, tmp_path)
    assert "broker up" in {e["event"] for e in r["events"]}, chaos.describe(r)   # the chaos broker started
    assert r["kills"].get("broker", 0) >= 1, r["kills"]
    assert_exactly_once(r)

"""The aggregator as a process: SIGTERM drains and commits, /metrics, a full disk stops it cleanly."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from aggregator import config as agg_config
from aggregator.cli.run import main as aggregator
from aggregator.verify import check_files
from lake.catalog.sqlite import SqliteCatalog as Catalog
from lake.storage import Storage
from schemas.record import DAY_NS
from shipper.cli import main as shipper
from tests.conftest import (
    cri,
    fill_lake,
    free_port,
    pod_log,
    stored_rows,
    wait_for_metrics,
    write_config,
    write_sample_logs,
)


def start(config, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aggregator.cli", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)


def test_sigterm_drains_and_metrics_are_served(tmp_path):
    expected = write_sample_logs(tmp_path)
    port = free_port()
    # a long flush interval: only the SIGTERM drain can write the file
    config = write_config(tmp_path, aggregator={"flush_interval_ms": 600_000, "metrics_address": f"127.0.0.1:{port}"})
    assert shipper(["--config", str(config), "--once"]) == 0
    proc = start(config)
    try:
        body = wait_for_metrics(port, "loglake_aggregator_buffered_records 5.0\n", "the aggregator never buffered the records")
        assert "loglake_aggregator_written_files_total 0.0\n" in body
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read() == b"ok\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert stored_rows(config) == expected


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


def test_full_disk_stops_with_one_sentence_and_no_partial_file(tmp_path):
    """A file-size limit stands in for a full disk: the Parquet write fails with EFBIG."""
    config = write_config(tmp_path)
    log = pod_log(tmp_path, "shop", "web-1", "nginx")
    log.write_text("".join(cri("2026-11-24T10:00:00Z", os.urandom(300).hex()) for _ in range(3000)))
    assert shipper(["--config", str(config), "--once"]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "--config", str(config), "--once"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_limit_file_size)
    assert proc.wait(timeout=60) == 1
    err = proc.stderr.read().decode().strip().splitlines()
    assert err[-1].startswith("loglake-aggregator: cannot write ") and "free space" in err[-1]
    catalog = Catalog(tmp_path / "lake" / "catalog.sqlite")
    assert catalog.files() == [] and catalog.positions("spool") == {}
    assert not [p for p in (tmp_path / "lake").rglob("*") if p.is_file() and "hot" in p.parts]
    catalog.close()
    # with room again, everything is stored, once
    assert aggregator(["--config", str(config), "--once"]) == 0
    rows = stored_rows(config)
    assert len(rows) == 3000 and len({r[1] for r in rows}) == 3000


def test_kill_9_at_any_moment_neither_loses_nor_duplicates(tmp_path):
    import random

    config = write_config(tmp_path, shipper={"batch_max_bytes": 2048},
                          aggregator={"flush_max_records": 40, "flush_interval_ms": 50})
    for j in range(3):
        pod_log(tmp_path, "shop", f"web-{j}", "nginx").write_text(
            "".join(cri(f"2026-11-24T10:00:00.{i:09d}Z", f"w{j} line {i}") for i in range(2000)))
    assert shipper(["--config", str(config), "--once"]) == 0
    rng = random.Random(3)
    progress = []
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "--config", str(config), "--once",
                                 "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.4, 1.2))
        proc.kill()
        proc.wait()
        # after every kill, the catalog and the files agree (the next start removes unlisted leftovers)
        assert [f for f in findings(config) if f.kind != "unlisted"] == []
        catalog = Catalog(tmp_path / "lake" / "catalog.sqlite")
        progress.append(sum(e.rows for e in catalog.files()))
        catalog.close()
    assert any(0 < rows < 6000 for rows in progress), f"no kill landed mid-consumption: {progress}"
    assert aggregator(["--config", str(config), "--once"]) == 0
    assert findings(config) == []
    assert counts(config) == (6000, 6000)


def findings(config) -> list:
    """What `loglake-aggregator verify` reports about the catalog and the files."""
    settings = agg_config.load(str(config))
    catalog = Catalog(settings.aggregator.catalog_path)
    try:
        return check_files(catalog, Storage(settings.aggregator, settings.tiers))[1]
    finally:
        catalog.close()


def counts(config) -> tuple[int, int]:
    import query
    return query.connect(str(config)).execute("SELECT count(*), count(DISTINCT record_id) FROM logs").fetchone()


@pytest.mark.parametrize("cold_file_max_rows", [0, 100])   # a cold file a day, or cold days cut into hours
def test_kill_9_mid_compaction_leaves_catalog_and_files_in_agreement(tmp_path, cold_file_max_rows):
    """Kill `compact` ever later until a run completes: after each kill every listed file is intact and
    every record is read exactly once; leftovers of the killed write are unlisted and removed next time."""
    config = write_config(tmp_path, tiers={"warm_after_s": 0, "delete_grace_s": 0,
                                           "cold_file_max_rows": cold_file_max_rows})
    n = fill_lake(tmp_path, config, rounds=6, lines=150)
    states, delay = set(), 0.3
    while True:
        proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "--config", str(config), "compact"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
            break  # it finished before the kill
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        found = findings(config)
        assert [f for f in found if f.kind != "unlisted"] == []
        assert counts(config) == (n, n)
        tiers = frozenset(e.tier for e in Catalog(tmp_path / "lake" / "catalog.sqlite").files())
        states.add((tiers, bool(found)))
        delay += 0.05
    assert proc.returncode == 0
    # some kills caught the files half-moved: tiers side by side, or an output written but not committed
    assert any(len(t) > 1 or leftover for t, leftover in states), states
    assert findings(config) == []
    cold = Catalog(tmp_path / "lake" / "catalog.sqlite").files()
    assert {e.tier for e in cold} == {"cold"}
    days = {(e.partition, e.min_time // DAY_NS) for e in cold}
    assert (len(cold) > len(days)) == bool(cold_file_max_rows)
    assert counts(config) == (n, n)


def test_the_running_aggregator_compacts_on_schedule(tmp_path):
    port = free_port()
    config = write_config(tmp_path, aggregator={"metrics_address": f"127.0.0.1:{port}"},
                          tiers={"compact_interval_s": 1, "warm_after_s": 0, "delete_grace_s": 0,
                                 "cold_after_s": 100 * 86400})
    n = fill_lake(tmp_path, config, rounds=2, lines=20)
    proc = start(config)
    try:
        wait_for_metrics(port, "loglake_aggregator_compaction_output_files_total 2.0\n", "no scheduled compaction", 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert {e.tier for e in Catalog(tmp_path / "lake" / "catalog.sqlite").files()} == {"warm"}
    assert counts(config) == (n, n) and findings(config) == []
